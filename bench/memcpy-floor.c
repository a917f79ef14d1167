/* The memory floor of BENCHMARKS.md, "Receiving in place": one CPU copying
 * 1514-byte frames into a ring of N MiB (argv[1]) for a second, as fast as
 * memcpy goes. Build: gcc -O2 bench/memcpy-floor.c -o /tmp/mc; run: /tmp/mc 4 */
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <time.h>
int main(int argc,char**argv){size_t ring=(size_t)atoi(argv[1])<<20; char*r=aligned_alloc(64,ring); char src[1600]; memset(src,1,sizeof src); memset(r,0,ring);
struct timespec a,b; clock_gettime(CLOCK_MONOTONIC,&a); size_t off=0; long n=0;
for(;;){ memcpy(r+off,src,1514); off+=1536; if(off+1536>ring) off=0; n++; if((n&0xffff)==0){clock_gettime(CLOCK_MONOTONIC,&b); if(b.tv_sec-a.tv_sec+(b.tv_nsec-a.tv_nsec)/1e9>1.0)break;}}
double t=b.tv_sec-a.tv_sec+(b.tv_nsec-a.tv_nsec)/1e9; printf("ring %zu MiB: %.1f Mframes/s %.1f GB/s\n",ring>>20,n/t/1e6,n*1514/t/1e9);}
