/*
 * pcguest: what guest.c and boot.S share.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef PCGUEST_H
#define PCGUEST_H

#include <stdint.h>

/* boot.S: the multiboot information's address, saved at entry */
extern uint32_t mbi_addr;
/* boot.S: the AP trampoline, copied to 0x8000 before the APs start */
extern char trampoline_start[], trampoline_end[];
/* boot.S: stop this CPU (kernel mode; also SYSCALL's entry point) */
extern char halt[];

/* guest.c, called by boot.S on the bootstrap processor */
void bsp_main(void);
/* guest.c, called by boot.S on application processor @index (1, 2, ...) */
void ap_main(unsigned int index);

#endif
