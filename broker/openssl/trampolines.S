/* minibroker's OpenSSL entry points (x86-64, System V ABI). Each function of
 * functions.inc is a jump through its slot. A slot starts out pointing at that
 * function's first-call entry (lazy binding, as a PLT does), which saves the
 * argument registers, has
 * mb_openssl_resolve (loader.cpp) load OpenSSL and fill every slot, restores
 * the registers and jumps to the real function: the caller sees a plain call.
 * A broker that never serves AMQPS never maps libssl or libcrypto. */

        .text
lazy_common:
        /* rsp = 8 mod 16 here (a call, then jumps); r11 = the slot's address.
         * Seven pushes and 128 bytes leave it 16-byte aligned for the call.
         * rax is kept for variadic callees (al counts vector registers). */
        push    %rdi
        push    %rsi
        push    %rdx
        push    %rcx
        push    %r8
        push    %r9
        push    %rax
        sub     $128, %rsp
        movdqu  %xmm0, 0(%rsp)
        movdqu  %xmm1, 16(%rsp)
        movdqu  %xmm2, 32(%rsp)
        movdqu  %xmm3, 48(%rsp)
        movdqu  %xmm4, 64(%rsp)
        movdqu  %xmm5, 80(%rsp)
        movdqu  %xmm6, 96(%rsp)
        movdqu  %xmm7, 112(%rsp)
        mov     %r11, %rdi
        call    mb_openssl_resolve@PLT
        mov     %rax, %r11
        movdqu  0(%rsp), %xmm0
        movdqu  16(%rsp), %xmm1
        movdqu  32(%rsp), %xmm2
        movdqu  48(%rsp), %xmm3
        movdqu  64(%rsp), %xmm4
        movdqu  80(%rsp), %xmm5
        movdqu  96(%rsp), %xmm6
        movdqu  112(%rsp), %xmm7
        add     $128, %rsp
        pop     %rax
        pop     %r9
        pop     %r8
        pop     %rcx
        pop     %rdx
        pop     %rsi
        pop     %rdi
        jmp     *%r11

#define MB_OPENSSL_FUNCTION(name)                       \
        .text;                                          \
        .globl name;                                    \
        .hidden name;                                   \
        .type name, @function;                          \
        .p2align 4;                                     \
name:   jmp     *mb_openssl_slot_##name(%rip);          \
        .size name, . - name;                           \
mb_openssl_lazy_##name:                                 \
        lea     mb_openssl_slot_##name(%rip), %r11;     \
        jmp     lazy_common;                            \
        .data;                                          \
        .p2align 3;                                     \
        .globl mb_openssl_slot_##name;                  \
        .hidden mb_openssl_slot_##name;                 \
mb_openssl_slot_##name:                                 \
        .quad   mb_openssl_lazy_##name;

#include "broker/openssl/functions.inc"

        .section .note.GNU-stack,"",@progbits
