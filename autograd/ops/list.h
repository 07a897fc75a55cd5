/* list.h: every op of the engine, once. Each AG_OP(name) entry is defined
 * in its family's file as `const ag_op_def ag__op_name = {...}` (name,
 * arity, shape rule, forward, backward together); the list makes the
 * table (ops/table.c) and the count. A list entry without a definition
 * fails to link; a definition missing a piece fails test_ops_table.
 *
 * Adding an op: one line here, its definition block, the public wrapper
 * and a line in autograd.h, and a reference case (tests/data). */
/* elementwise.c: binary, broadcast */
AG_OP(add)
AG_OP(sub)
AG_OP(mul)
AG_OP(div)
/* elementwise.c: unary */
AG_OP(neg)
AG_OP(exp)
AG_OP(log)
AG_OP(sqrt)
AG_OP(pow)
AG_OP(abs)
AG_OP(sigmoid)
AG_OP(tanh)
AG_OP(relu)
AG_OP(leaky_relu)
AG_OP(softplus)
AG_OP(add_scalar)
AG_OP(scale)
/* elementwise.c: the second op set */
AG_OP(sin)
AG_OP(cos)
AG_OP(tan)
AG_OP(asin)
AG_OP(acos)
AG_OP(atan)
AG_OP(sinh)
AG_OP(cosh)
AG_OP(log1p)
AG_OP(expm1)
AG_OP(erf)
AG_OP(square)
AG_OP(reciprocal)
AG_OP(rsqrt)
AG_OP(gelu)
AG_OP(silu)
AG_OP(elu)
AG_OP(clamp)
AG_OP(maximum)
AG_OP(minimum)
AG_OP(atan2)
AG_OP(pow_tensor)
AG_OP(where)
/* (end of the elementwise second op set) */
/* matmul.c */
AG_OP(matmul)
/* shape.c */
AG_OP(transpose)
AG_OP(reshape)
AG_OP(concat)
AG_OP(slice)
AG_OP(cast)
AG_OP(detach)
/* shape.c, index.c: the second op set */
AG_OP(permute)
AG_OP(expand)
AG_OP(index_select)
AG_OP(gather)
/* index.c: internal, the recorded backwards of index_select and gather */
AG_OP(index_add)
AG_OP(scatter_add)
/* (end of the shape second op set) */
/* reduce.c */
AG_OP(sum)
AG_OP(mean)
AG_OP(sum_axis)
AG_OP(mean_axis)
AG_OP(max_axis)
AG_OP(softmax)
AG_OP(log_softmax)
/* reduce.c: the second op set */
AG_OP(min_axis)
AG_OP(prod_axis)
AG_OP(var_axis)
AG_OP(logsumexp)
AG_OP(norm)
AG_OP(argmax)
AG_OP(argmin)
AG_OP(sum_axes)
AG_OP(mean_axes)
/* (end of the reduce second op set) */
/* loss.c */
AG_OP(mse)
AG_OP(quadratic_cost)
AG_OP(bce)
AG_OP(bce_with_logits)
AG_OP(cross_entropy)
/* loss.c, norm.c: the second op set */
AG_OP(nll_loss)
AG_OP(huber_loss)
AG_OP(layer_norm)
AG_OP(dropout)
/* (end of the loss second op set) */
