/* Stands in for Windows' bcryptprimitives.dll under Wine 8, which lacks it: Rust's std on
 * Windows takes its random bytes from ProcessPrng there, so without this DLL next to the exe
 * the agent does not start under Wine (status c0000135). Only the Wine test uses it; real
 * Windows (10 and later) has the DLL. Built by the test with
 *   x86_64-w64-mingw32-gcc -shared -o bcryptprimitives.dll bcryptprimitives.c
 *       bcryptprimitives.def -ladvapi32
 */
#include <windows.h>
/* ntsecapi.h declares RtlGenRandom as SystemFunction036 without NTAPI. */
#define SystemFunction036 NTAPI SystemFunction036
#include <ntsecapi.h>
#undef SystemFunction036

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) { return RtlGenRandom(data, (ULONG)len); }
