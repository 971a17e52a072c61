/*
 * Baseline for the iommufd map/unmap benchmark: the same two ioctls the Rust
 * importer issues for a fixed-IOVA dma-buf mapping (IOMMU_IOAS_MAP_FILE, then
 * IOMMU_IOAS_UNMAP), issued from C with nothing around them.
 *
 * Two ways to use it:
 * - as a shared object (cc -O2 -shared -fPIC): the benchmark dlopens it and calls
 *   peerdma_c_map_unmap() once per iteration, interleaved with the Rust path in the
 *   same process, so that host noise hits both alike;
 * - as a program: iommufd_map_unmap IOMMUFD IOAS_ID DMABUF_FD LENGTH IOVA ITERATIONS
 *   (fds inherited from the caller) runs ITERATIONS/10 untimed warm-up cycles, then
 *   times ITERATIONS cycles and prints one line: "c_ns_per_iter=N".
 *
 * The structs and opcodes are written out from include/uapi/linux/iommufd.h of
 * Linux 7.2 because build hosts' headers may predate IOMMU_IOAS_MAP_FILE (6.13).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>

#define IOMMUFD_TYPE ';'
#define IOMMU_IOAS_UNMAP _IO(IOMMUFD_TYPE, 0x86)
#define IOMMU_IOAS_MAP_FILE _IO(IOMMUFD_TYPE, 0x8f)
#define MAP_FIXED_IOVA (1u << 0)
#define MAP_WRITEABLE (1u << 1)
#define MAP_READABLE (1u << 2)

struct map_file {
	uint32_t size, flags, ioas_id;
	int32_t fd;
	uint64_t start, length, iova;
};

struct unmap {
	uint32_t size, ioas_id;
	uint64_t iova, length;
};

/* One map + unmap cycle; 0 or the failing errno (negated for the unmap). */
int peerdma_c_map_unmap(int iommufd, uint32_t ioas, int dmabuf, uint64_t length, uint64_t iova)
{
	struct map_file m = {
		.size = sizeof(m),
		.flags = MAP_FIXED_IOVA | MAP_READABLE | MAP_WRITEABLE,
		.ioas_id = ioas,
		.fd = dmabuf,
		.start = 0,
		.length = length,
		.iova = iova,
	};
	if (ioctl(iommufd, IOMMU_IOAS_MAP_FILE, &m))
		return errno;
	struct unmap u = { .size = sizeof(u), .ioas_id = ioas, .iova = iova, .length = length };
	if (ioctl(iommufd, IOMMU_IOAS_UNMAP, &u))
		return -errno;
	return 0;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc != 7) {
		fprintf(stderr, "usage: %s IOMMUFD IOAS_ID DMABUF_FD LENGTH IOVA ITERATIONS\n", argv[0]);
		return 2;
	}
	int iommufd = atoi(argv[1]);
	uint32_t ioas = strtoul(argv[2], NULL, 0);
	int dmabuf = atoi(argv[3]);
	uint64_t length = strtoull(argv[4], NULL, 0);
	uint64_t iova = strtoull(argv[5], NULL, 0);
	long iters = strtol(argv[6], NULL, 0);

	uint64_t start = 0;
	long warmup = iters / 10;
	for (long i = -warmup; i < iters; i++) {
		if (i == 0)
			start = now_ns();
		int rc = peerdma_c_map_unmap(iommufd, ioas, dmabuf, length, iova);
		if (rc) {
			fprintf(stderr, "%s: %s\n", rc > 0 ? "IOMMU_IOAS_MAP_FILE" : "IOMMU_IOAS_UNMAP",
				strerror(rc > 0 ? rc : -rc));
			return 1;
		}
	}
	uint64_t elapsed = now_ns() - start;
	printf("c_ns_per_iter=%llu\n", (unsigned long long)(elapsed / (iters ? iters : 1)));
	return 0;
}
