/* index.c: index_select and gather: elements picked by integer indices. */
#include "../internal.h"
