#!/usr/bin/env python3
"""resume_check.py MNIST_MLP: a checkpoint resumes mnist_mlp exactly, in a new
process. On the bundled digits: run A trains 4 epochs straight; run B trains
epochs 1-2 of 4 and writes a checkpoint; run C resumes it for epochs 3-4. The
model files A and C save must be the same bytes (and B's must differ: it
stopped halfway). Then the refusals: resuming with another --batch, and a
checkpoint past --epochs."""
import filecmp, os, subprocess, sys, tempfile

exe = sys.argv[1]


def run(*args, status=0):
    p = subprocess.run([exe, '--digits', *args], capture_output=True, text=True)
    if p.returncode != status:
        sys.exit(f'resume_check: {args} exited {p.returncode}, not {status}:\n{p.stdout}{p.stderr}')
    return p.stdout + p.stderr


with tempfile.TemporaryDirectory() as d:
    path = lambda name: os.path.join(d, name)
    run('--epochs', '4', '--save', path('a.nnm'))
    run('--epochs', '4', '--stop-after', '2', '--checkpoint', path('ck.nnc'), '--save', path('b.nnm'))
    out = run('--epochs', '4', '--resume', path('ck.nnc'), '--save', path('c.nnm'))
    if 'resumed from' not in out or 'epoch 3/4' not in out:
        sys.exit('resume_check: run C did not resume at epoch 3:\n' + out)
    if not filecmp.cmp(path('a.nnm'), path('c.nnm'), shallow=False):
        sys.exit('resume_check: the resumed run saved another model than the straight run')
    if filecmp.cmp(path('a.nnm'), path('b.nnm'), shallow=False):
        sys.exit('resume_check: the stopped run saved the final model: the check proves nothing')
    err = run('--epochs', '4', '--batch', '64', '--resume', path('ck.nnc'), status=1)
    if 'batches of 128, these over 1500 rows in batches of 64' not in err:
        sys.exit('resume_check: another --batch was not refused clearly:\n' + err)
    err = run('--epochs', '1', '--resume', path('ck.nnc'), status=1)
    if 'is at epoch 2, past --epochs 1' not in err:
        sys.exit('resume_check: a checkpoint past --epochs was not refused:\n' + err)
    print('runs A (4 epochs) and B+C (2 + checkpoint + --resume 2) saved identical models,',
          os.path.getsize(path('c.nnm')), 'bytes; checkpoint', os.path.getsize(path('ck.nnc')), 'bytes')
