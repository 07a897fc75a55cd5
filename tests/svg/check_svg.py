#!/usr/bin/env python3
"""check_svg.py MODE EPOCHS FIRST -- PROGRAM ARG...: runs PROGRAM ARG... --plot
OUT.svg (in a temporary directory) and checks the training curve it draws.

  xml      the file is well-formed XML, an <svg> with two polylines (cost in
           #d62728, accuracy in #1f77b4) of EPOCHS points each, their axes
           labelled ('epoch', 'cost', 'accuracy (%)') and ticked from epoch FIRST
  browser  headless Chromium renders it to PNG, which must not be blank and
           must show both series' colours; exits 77 (skip) without chromium

Standard library only (the PNG is decoded with zlib and struct)."""
import os, shutil, struct, subprocess, sys, tempfile, zlib
import xml.etree.ElementTree as ET

SVG = '{http://www.w3.org/2000/svg}'
COST, ACCURACY = (0xd6, 0x27, 0x28), (0x1f, 0x77, 0xb4)


def fail(msg):
    print('check_svg: ' + msg, file=sys.stderr)
    sys.exit(1)


def check_xml(path, epochs, first):
    root = ET.parse(path).getroot()  # raises on malformed XML
    if root.tag != SVG + 'svg':
        fail(f'root element is {root.tag}, not svg')
    lines = root.findall(SVG + 'polyline')
    colours = sorted(l.get('stroke') for l in lines)
    if colours != ['#1f77b4', '#d62728']:
        fail(f'polylines of colours {colours}, want one cost (#d62728), one accuracy (#1f77b4)')
    for l in lines:
        points = l.get('points').split()
        if len(points) != epochs:
            fail(f'{l.get("stroke")} has {len(points)} points, want {epochs}')
        xs = [float(p.split(',')[0]) for p in points]
        if xs != sorted(xs) or len(set(xs)) != epochs:
            fail('the points do not run left to right, one per epoch')
    texts = [t.text for t in root.iter(SVG + 'text')]
    for want in ['epoch', 'cost', 'accuracy (%)', str(first)]:
        if want not in texts:
            fail(f'no text {want!r} (texts: {texts[:12]}...)')
    print(f'{path}: well-formed, 2 series of {epochs} points, axes labelled')


def png_pixels(path):
    """(width, height, rows of (r, g, b) tuples) of an 8-bit RGB/RGBA PNG."""
    data = open(path, 'rb').read()
    if data[:8] != b'\x89PNG\r\n\x1a\n':
        fail(f'{path} is not a PNG')
    pos, idat, ihdr = 8, b'', None
    while pos < len(data):
        n, kind = struct.unpack('>I4s', data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b'IHDR':
            ihdr = struct.unpack('>IIBBBBB', body)
        elif kind == b'IDAT':
            idat += body
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = ihdr
    if depth != 8 or ctype not in (2, 6) or interlace:
        fail(f'unexpected PNG format: depth {depth}, colour type {ctype}, interlace {interlace}')
    bpp = 3 if ctype == 2 else 4
    raw, stride, prev, rows = zlib.decompress(idat), w * bpp, bytearray(w * bpp), []
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1: line[i] = (line[i] + a) & 255
            elif f == 2: line[i] = (line[i] + b) & 255
            elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append([tuple(line[x * bpp:x * bpp + 3]) for x in range(w)])
        prev = line
    return w, h, rows


def near(p, q, tol=40):
    return all(abs(a - b) <= tol for a, b in zip(p, q))


def check_browser(path, tmp):
    chromium = shutil.which('chromium') or shutil.which('chromium-browser')
    if not chromium:
        print('check_svg: chromium is not installed: skipped')
        sys.exit(77)
    png = os.path.join(tmp, 'out.png')
    subprocess.run([chromium, '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars',
                    f'--screenshot={png}', '--window-size=800,700', 'file://' + path],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120, check=True,
                   env=dict(os.environ, HOME=tmp))
    w, h, rows = png_pixels(png)
    pixels = [p for row in rows for p in row]
    ink = sum(p != (255, 255, 255) for p in pixels)
    red = sum(near(p, COST) for p in pixels)
    blue = sum(near(p, ACCURACY) for p in pixels)
    print(f'{png}: {w}x{h}, {ink} non-white pixels, {red} of the cost colour, {blue} of the accuracy colour')
    if ink < w * h // 200:
        fail('the rendering is blank')
    if red < 100 or blue < 100:
        fail('a series did not draw')


def main():
    if len(sys.argv) < 6 or sys.argv[1] not in ('xml', 'browser') or sys.argv[4] != '--':
        fail('usage: check_svg.py xml|browser EPOCHS FIRST -- PROGRAM ARG...')
    mode, epochs, first, cmd = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[5:]
    cmd[0] = os.path.abspath(cmd[0])  # it runs in the temporary directory
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'curve.svg')
        subprocess.run(cmd + ['--plot', path], stdout=subprocess.DEVNULL, check=True, cwd=tmp)
        check_xml(path, epochs, first)
        if mode == 'browser':
            check_browser(path, tmp)


main()
