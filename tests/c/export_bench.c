/*
 * The C side of peerdma's export checks, loaded by peerdma-guest-export with dlopen so
 * that it works on the device fd the Rust program opened (same device, same run).
 *
 * - peerdma_export_bench: the baseline of the export latency benchmark
 *   (docs/benchmarks.md, "Export latency"): VFIO_DEVICE_FEATURE(GET | DMA_BUF) issued
 *   directly, with the argument built once or per export, the new fd closed outside the
 *   timed part, exactly as the Rust loop does.
 * - peerdma_export_raw: one export with arguments the Rust library never builds
 *   (flags != 0, a short argsz, nr_ranges larger than the array that follows, ending
 *   at an inaccessible page), for the errno guide (docs/errno.md).
 *
 * The ABI is written out here rather than taken from the host's <linux/vfio.h>, which
 * may predate the feature (Linux 6.19); tests/tests/layout.rs proves the Rust side's
 * layout against the 7.2 headers, and this file follows the same layout:
 *   struct vfio_device_feature { u32 argsz; u32 flags; u8 data[]; }
 *   struct vfio_device_feature_dma_buf { u32 region_index; u32 open_flags; u32 flags;
 *                                        u32 nr_ranges; struct { u64 offset, length; } ranges[]; }
 *
 * Build: cc -O2 -shared -fPIC -o libpeerdma-export-c.so tests/c/export_bench.c
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PD_VFIO_TYPE ';'
#define PD_VFIO_BASE 100
#define PD_VFIO_DEVICE_FEATURE _IO(PD_VFIO_TYPE, PD_VFIO_BASE + 17)
#define PD_FEATURE_GET (1u << 16)
#define PD_FEATURE_DMA_BUF 11u

struct pd_range {
	uint64_t offset;
	uint64_t length;
};

/* vfio_device_feature followed by vfio_device_feature_dma_buf: ranges start at byte 24. */
struct pd_export_arg {
	uint32_t argsz;
	uint32_t feature_flags;
	uint32_t region_index;
	uint32_t open_flags;
	uint32_t flags;
	uint32_t nr_ranges;
	struct pd_range ranges[];
};

_Static_assert(sizeof(struct pd_export_arg) == 24, "header is 24 bytes");

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void fill(struct pd_export_arg *arg, uint32_t argsz, uint32_t region,
		 const uint64_t *pairs, uint32_t nr)
{
	arg->argsz = argsz;
	arg->feature_flags = PD_FEATURE_GET | PD_FEATURE_DMA_BUF;
	arg->region_index = region;
	arg->open_flags = O_RDWR | O_CLOEXEC;
	arg->flags = 0;
	arg->nr_ranges = nr;
	for (uint32_t i = 0; i < nr; i++) {
		arg->ranges[i].offset = pairs[2 * i];
		arg->ranges[i].length = pairs[2 * i + 1];
	}
}

/*
 * What a C library's `export(fd, region, ranges, nr)` does: allocate the argument, fill
 * it, issue the ioctl, free the argument; returns the new fd or -errno. Kept out of line
 * (as a library function is, and as the Rust library's export is a call) so the
 * benchmark compares a call with a call.
 */
__attribute__((noinline)) static int export_once(int device_fd, uint32_t region,
						  const uint64_t *pairs, uint32_t nr)
{
	size_t size = sizeof(struct pd_export_arg) + (size_t)nr * sizeof(struct pd_range);
	struct pd_export_arg *arg = calloc(1, size);
	int fd;

	if (!arg)
		return -ENOMEM;
	fill(arg, (uint32_t)size, region, pairs, nr);
	fd = ioctl(device_fd, PD_VFIO_DEVICE_FEATURE, arg);
	if (fd < 0)
		fd = -errno;
	free(arg);
	return fd;
}

/*
 * Exports `nr` ranges (offset, length pairs) of BAR `region` `iters` times, closing each
 * new fd outside the timed part. With `build_each` 0 the argument is built once, before
 * the loop (the floor: nothing but the ioctl is timed); with 1 each export is a call of
 * export_once, which allocates, fills and frees its own argument inside the timed part,
 * as a C library function `export(fd, region, ranges, nr)` must. Stores the summed time
 * in *export_ns.
 * Returns 0, or -errno of the first failure.
 */
int peerdma_export_bench(int device_fd, uint32_t region, const uint64_t *pairs,
			 uint32_t nr, uint32_t iters, uint32_t build_each, uint64_t *export_ns)
{
	size_t size = sizeof(struct pd_export_arg) + (size_t)nr * sizeof(struct pd_range);
	struct pd_export_arg *once = build_each ? NULL : calloc(1, size);
	uint64_t total = 0;
	int ret = 0;

	if (!build_each && !once)
		return -ENOMEM;
	if (once)
		fill(once, (uint32_t)size, region, pairs, nr);
	for (uint32_t i = 0; i < iters; i++) {
		uint64_t t0 = now_ns();
		int fd;

		if (once) {
			fd = ioctl(device_fd, PD_VFIO_DEVICE_FEATURE, once);
			if (fd < 0)
				fd = -errno;
		} else {
			fd = export_once(device_fd, region, pairs, nr);
		}
		if (fd < 0)
			ret = fd;
		uint64_t t1 = now_ns();

		if (fd < 0)
			break;
		total += t1 - t0;
		close(fd);
	}
	free(once);
	*export_ns = total;
	return ret;
}

/*
 * One export with a hand-made argument: `flags` goes into the dma-buf flags word,
 * `argsz_delta` is added to the correct argsz, and `claimed` is the nr_ranges the kernel
 * is told while only `nr` ranges are present. The argument is placed so that the given
 * ranges end exactly where an inaccessible page begins, so a kernel that reads past
 * them faults. Returns the new fd (the caller closes it) or -errno.
 */
int peerdma_export_raw(int device_fd, uint32_t region, const uint64_t *pairs, uint32_t nr,
		       uint32_t claimed, uint32_t flags, int32_t argsz_delta)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t size = sizeof(struct pd_export_arg) + (size_t)nr * sizeof(struct pd_range);
	size_t span = (size + (size_t)page - 1) / (size_t)page * (size_t)page;
	uint8_t *area = mmap(NULL, span + (size_t)page, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct pd_export_arg *arg;
	int fd, ret;

	if (area == MAP_FAILED)
		return -errno;
	if (mprotect(area + span, (size_t)page, PROT_NONE) != 0) {
		ret = -errno;
		munmap(area, span + (size_t)page);
		return ret;
	}
	arg = (struct pd_export_arg *)(area + span - size);
	fill(arg, (uint32_t)((int64_t)size + argsz_delta), region, pairs, nr);
	arg->nr_ranges = claimed;
	arg->flags = flags;
	fd = ioctl(device_fd, PD_VFIO_DEVICE_FEATURE, arg);
	ret = fd < 0 ? -errno : fd;
	munmap(area, span + (size_t)page);
	return ret;
}
