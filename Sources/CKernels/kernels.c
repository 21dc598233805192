#include "CKernels.h"
int gk_cpu_level(void) { return 0; }
