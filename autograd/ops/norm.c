/* norm.c: layer_norm, dropout and the other normalising ops. */
#include "../internal.h"
