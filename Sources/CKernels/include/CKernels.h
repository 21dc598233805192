#ifndef GRAFT_CKERNELS_H
#define GRAFT_CKERNELS_H
#include <stddef.h>
#include <stdint.h>
/* Placeholder: the kernels helper owns this file. */
int gk_cpu_level(void);
#endif
