/* isa.h: the vector instruction sets the GEMM kernels are compiled for
 * (each kernel with its own target attribute, so one portable build holds
 * them all), which one this process runs, and how to cap it.
 *
 * The choice reads the CPU's feature bits (CPUID) and what state the OS
 * saves on a context switch (XGETBV), never a CPU family or model name:
 * virtual machines hide those. It is made once, on the first product, and
 * capped by the environment variable AG_ISA (portable, avx2 or avx512: a
 * cap, so avx512 on a CPU without it gives the best there is; any other
 * value is no cap). Tests cap it at run time with ag__gemm_set_isa. */
#ifndef AG_ISA_H
#define AG_ISA_H

#include "../base.h"

#include <stdint.h>

/* In order: each set includes the ones before it. */
typedef enum {
    AG_ISA_PORTABLE, /* C with vector extensions, the compiler's baseline (SSE2 on x86-64) */
    AG_ISA_AVX2,     /* AVX2 + FMA: 256-bit vectors, 16 registers */
    AG_ISA_AVX512,   /* AVX-512 F, VL, BW, DQ (x86-64-v4): 512-bit vectors, 32 registers, masks */
    AG_ISA_COUNT
} ag_isa;

/* What the choice reads: CPUID leaf 1 ECX (FMA bit 12, OSXSAVE 27, AVX 28),
 * CPUID leaf 7 subleaf 0 EBX (AVX2 bit 5, AVX512F 16, AVX512DQ 17,
 * AVX512BW 30, AVX512VL 31), and XCR0, the state the OS saves (XMM and YMM
 * bits 1-2; opmask, upper ZMM and ZMM16-31 bits 5-7; 0 when OSXSAVE is
 * off). */
typedef struct {
    uint32_t leaf1_ecx, leaf7_ebx;
    uint64_t xcr0;
} ag_cpu_bits;

/* This CPU's bits (all zero where there is no CPUID: not x86). */
ag_cpu_bits ag__cpu_bits(void);
/* The best set the bits allow that this build has kernels for. */
ag_isa ag__isa_from_bits(const ag_cpu_bits *b);
/* "portable", "avx2", "avx512"; "?" for anything else. */
const char *ag__isa_name(ag_isa isa);
/* The set named s (as ag__isa_name writes it); AG_ISA_COUNT for NULL or
 * any other string. */
ag_isa ag__isa_parse(const char *s);

/* The set GEMM runs on: ag__isa_from_bits(this CPU), capped by AG_ISA
 * (read on the first call). */
ag_isa ag__gemm_isa(void);
/* Caps the set at run time, for tests: GEMM runs on the lesser of cap and
 * the CPU's best, AG_ISA ignored; AG_ISA_COUNT goes back to the first
 * call's choice (AG_ISA read again). Returns the set now used.
 * Each product reads the set once, so a product running on another thread
 * meanwhile finishes on the set it started with. */
ag_isa ag__gemm_set_isa(ag_isa cap);
/* The kernels the set now used runs, e.g. "avx512 (f32 14x32, f64 14x16)":
 * the set's name and the register tiles, rows x columns of C. */
const char *ag__gemm_kernel_name(void);

#endif
