/*
 * pcguest: boot.  A multiboot (a.out kludge) image loaded at 1 MiB by
 * QEMU's -kernel; the bootstrap processor enters in 32-bit protected mode,
 * builds identity page tables (2 MiB pages, 0..32 GiB, user-accessible
 * too: the workload runs in user mode), enters long mode and calls
 * bsp_main().  Application processors start in real mode at
 * 0x8000 (the trampoline, copied there by start_aps()), then share the
 * same path into long mode and call ap_main(index).
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#define MB_MAGIC        0x1BADB002
#define MB_FLAGS        ((1 << 16) | (1 << 1))   /* addresses, memory map */
#define NR_PD           32                       /* GiB identity-mapped */
#define STACK_SIZE      16384
#define MAX_CPUS        16
#define TRAMPOLINE      0x8000

    .section .note.GNU-stack, "", @progbits

    .section .multiboot, "a"
    .align 4
mb_header:
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)
    .long mb_header
    .long _load_start
    .long _load_end
    .long _bss_end
    .long _start32

    .text
    .code32
    .globl _start32
_start32:
    cli
    movl %ebx, mbi_addr
    /* PML4[0] -> PDPT */
    movl $pdpt, %eax
    orl $7, %eax
    movl %eax, pml4
    /* PDPT[i] -> PD i */
    xorl %ecx, %ecx
1:  movl %ecx, %eax
    shll $12, %eax
    addl $pds, %eax
    orl $7, %eax
    movl %eax, pdpt(, %ecx, 8)
    incl %ecx
    cmpl $NR_PD, %ecx
    jb 1b
    /* PD entry k maps 2 MiB at k << 21: present, writable, user, large */
    xorl %ecx, %ecx
2:  movl %ecx, %eax
    shll $21, %eax
    orl $0x87, %eax
    movl %eax, pds(, %ecx, 8)
    movl %ecx, %eax
    shrl $11, %eax
    movl %eax, pds + 4(, %ecx, 8)
    incl %ecx
    cmpl $(NR_PD * 512), %ecx
    jb 2b

    .globl enter_long_mode
enter_long_mode:
    movl %cr4, %eax
    orl $(1 << 5), %eax                 /* PAE */
    movl %eax, %cr4
    movl $pml4, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx              /* EFER */
    rdmsr
    orl $(1 << 8), %eax                 /* LME */
    wrmsr
    movl %cr0, %eax
    orl $0x80000001, %eax               /* PG | PE */
    movl %eax, %cr0
    lgdt gdt64_ptr
    ljmp $0x08, $start64

    .code64
start64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    /* index of this CPU, in arrival order: the BSP is first */
    movl $1, %eax
    lock xaddl %eax, next_cpu
    cmpl $MAX_CPUS, %eax
    jae halt
    movl %eax, %edi
    leal 1(%eax), %eax
    imull $STACK_SIZE, %eax
    leaq stacks(%rip), %rsp
    addq %rax, %rsp
    testl %edi, %edi
    jnz 3f
    call bsp_main
    jmp halt
3:  call ap_main
/* Also where a CPU's SYSCALL from user mode lands (guest.c). */
    .globl halt
halt:
    cli
    hlt
    jmp halt

/*
 * AP trampoline: copied to TRAMPOLINE, entered in real mode with CS at
 * TRAMPOLINE >> 4.  Addresses are computed for where it runs.
 */
#define T(sym) ((sym) - trampoline_start + TRAMPOLINE)
    .code16
    .globl trampoline_start, trampoline_end
trampoline_start:
    cli
    xorw %ax, %ax
    movw %ax, %ds
    lgdtl T(tramp_gdt_ptr)
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, $T(tramp32)
    .code32
tramp32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl $enter_long_mode, %eax
    jmp *%eax
    .align 8
tramp_gdt:
    .quad 0
    .quad 0x00CF9A000000FFFF            /* 32-bit code */
    .quad 0x00CF92000000FFFF            /* data */
tramp_gdt_ptr:
    .word 23
    .long T(tramp_gdt)
trampoline_end:

    .section .rodata
    .align 8
gdt64:
    .quad 0
    .quad 0x00AF9A000000FFFF            /* 64-bit code */
    .quad 0x00CF92000000FFFF            /* data */
    .quad 0x00CFF2000000FFFF            /* user data, 0x1b (guest.c) */
    .quad 0x00AFFA000000FFFF            /* user 64-bit code, 0x23 */
gdt64_ptr:
    .word 39
    .long gdt64

    .data
    .globl mbi_addr
mbi_addr:
    .long 0
next_cpu:
    .long 0

    .bss
    .align 4096
pml4:
    .skip 4096
pdpt:
    .skip 4096
pds:
    .skip 4096 * NR_PD
    .align 16
stacks:
    .skip STACK_SIZE * (MAX_CPUS + 1)
