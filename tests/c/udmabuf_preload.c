/*
 * The testbed's stand-in for /dev/udmabuf inside the QEMU process (LD_PRELOAD).
 *
 * QEMU's virtio-gpu refuses `blob=true` unless it can open /dev/udmabuf
 * (ui/udmabuf.c: open("/dev/udmabuf", O_RDWR) once, at a fixed path) and a memory
 * backend is a memfd. For each blob resource it then asks UDMABUF_CREATE_LIST for one
 * dma-buf over the guest-RAM ranges (RAM block fd, offset, size: see
 * hw/display/virtio-gpu-udmabuf.c) and mmaps that dma-buf PROT_READ, MAP_SHARED at
 * offset 0 to read the pixels (its display surface and `screendump`). It uses the fd
 * for nothing else when no GL display is attached (the testbed runs -display none).
 *
 * This library emulates exactly that, for hosts whose kernel has no udmabuf module:
 * - open/openat of "/dev/udmabuf" returns a placeholder fd (an empty memfd);
 * - UDMABUF_CREATE and UDMABUF_CREATE_LIST on it check each item (page-aligned offset
 *   and size, inside the file) and return a new placeholder fd that remembers dups of
 *   the items' fds;
 * - mmap of such an fd maps the items, in order, MAP_FIXED into one reserved range:
 *   the same pages as the RAM blocks, so nothing is copied and a write to the backing
 *   file shows in the mapping;
 * - close forgets it.
 * Unlike the kernel it accepts any mappable fd, not only sealed memfds: a BAR of an
 * ivshmem device backed by a host file reaches the display that way (on a real
 * udmabuf host, such a range would need a memfd-backed ivshmem).
 *
 * Built by the testbed with `cc -shared -fPIC` at run time; used only where
 * /dev/udmabuf is missing and `--emulate-udmabuf` was given.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/udmabuf.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEV_PATH "/dev/udmabuf"
#define MAX_BUFS 4096
#define MAX_ITEMS 1024

struct item {
	int fd;
	uint64_t offset;
	uint64_t size;
};

struct buf {
	int fd; /* the placeholder QEMU holds; -1 when free */
	unsigned count;
	uint64_t size;
	struct item *items;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int dev_fd = -1;
static struct buf bufs[MAX_BUFS];
static int bufs_ready;
static unsigned long created;

static void init_bufs(void)
{
	if (!bufs_ready) {
		for (int i = 0; i < MAX_BUFS; i++)
			bufs[i].fd = -1;
		bufs_ready = 1;
	}
}

static struct buf *find_buf(int fd)
{
	init_bufs();
	for (int i = 0; i < MAX_BUFS; i++)
		if (bufs[i].fd == fd && fd >= 0)
			return &bufs[i];
	return NULL;
}

static int placeholder(const char *name)
{
	return memfd_create(name, MFD_CLOEXEC);
}

static int is_dev(const char *path)
{
	return path && strcmp(path, DEV_PATH) == 0;
}

static int open_dev(void)
{
	pthread_mutex_lock(&lock);
	if (dev_fd < 0) {
		dev_fd = placeholder("peerdma-udmabuf-emulation");
		if (dev_fd >= 0)
			fprintf(stderr, "peerdma-testbed: udmabuf emulation: %s opened "
				"(LD_PRELOAD; this host has no udmabuf module)\n", DEV_PATH);
	}
	int fd = dev_fd >= 0 ? dup(dev_fd) : -1;
	pthread_mutex_unlock(&lock);
	return fd;
}

/* open and its variants: only "/dev/udmabuf" is ours. */
#define REAL(name) ((__typeof__(&name))dlsym(RTLD_NEXT, #name))

static int forward_open(const char *sym, int dirfd, const char *path, int flags, mode_t mode)
{
	if (is_dev(path))
		return open_dev();
	if (dirfd == -100000) {
		int (*f)(const char *, int, ...) = dlsym(RTLD_NEXT, sym);
		return f(path, flags, mode);
	}
	int (*f)(int, const char *, int, ...) = dlsym(RTLD_NEXT, sym);
	return f(dirfd, path, flags, mode);
}

#define MODE_ARG                                             \
	mode_t mode = 0;                                     \
	if (flags & (O_CREAT | O_TMPFILE)) {                 \
		va_list ap;                                  \
		va_start(ap, flags);                         \
		mode = va_arg(ap, mode_t);                   \
		va_end(ap);                                  \
	}

int open(const char *path, int flags, ...)
{
	MODE_ARG
	return forward_open("open", -100000, path, flags, mode);
}

int open64(const char *path, int flags, ...)
{
	MODE_ARG
	return forward_open("open64", -100000, path, flags, mode);
}

int __open_2(const char *path, int flags)
{
	return forward_open("__open_2", -100000, path, flags, 0);
}

int __open64_2(const char *path, int flags)
{
	return forward_open("__open64_2", -100000, path, flags, 0);
}

int openat(int dirfd, const char *path, int flags, ...)
{
	MODE_ARG
	return forward_open("openat", dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
	MODE_ARG
	return forward_open("openat64", dirfd, path, flags, mode);
}

static int is_dev_fd(int fd)
{
	struct stat a, b;
	if (dev_fd < 0 || fstat(fd, &a) || fstat(dev_fd, &b))
		return 0;
	return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

static int create(const struct udmabuf_create_item *list, unsigned count, unsigned flags)
{
	if (count == 0 || count > MAX_ITEMS || (flags & ~UDMABUF_FLAGS_CLOEXEC)) {
		errno = EINVAL;
		return -1;
	}
	long page = sysconf(_SC_PAGESIZE);
	struct item *items = calloc(count, sizeof(*items));
	if (!items) {
		errno = ENOMEM;
		return -1;
	}
	uint64_t total = 0;
	unsigned i;
	for (i = 0; i < count; i++) {
		struct stat st;
		const struct udmabuf_create_item *it = &list[i];
		if (it->size == 0 || it->offset % page || it->size % page ||
		    fstat((int)it->memfd, &st) || !S_ISREG(st.st_mode) ||
		    it->offset + it->size < it->offset ||
		    it->offset + it->size > (uint64_t)st.st_size)
			goto inval;
		items[i].fd = fcntl((int)it->memfd, F_DUPFD_CLOEXEC, 0);
		if (items[i].fd < 0)
			goto fail;
		items[i].offset = it->offset;
		items[i].size = it->size;
		total += it->size;
	}
	int fd = placeholder("peerdma-udmabuf-emulated-dmabuf");
	if (fd < 0)
		goto fail;
	if (!(flags & UDMABUF_FLAGS_CLOEXEC))
		fcntl(fd, F_SETFD, 0);
	pthread_mutex_lock(&lock);
	struct buf *b = find_buf(-1);
	for (int j = 0; !b && j < MAX_BUFS; j++)
		if (bufs[j].fd < 0)
			b = &bufs[j];
	if (!b) {
		pthread_mutex_unlock(&lock);
		close(fd);
		errno = EMFILE;
		goto fail;
	}
	b->fd = fd;
	b->count = count;
	b->size = total;
	b->items = items;
	if (created++ == 0)
		fprintf(stderr, "peerdma-testbed: udmabuf emulation: first dma-buf, %u range(s), "
			"%llu bytes\n", count, (unsigned long long)total);
	pthread_mutex_unlock(&lock);
	return fd;
inval:
	errno = EINVAL;
fail: {
	int saved = errno;
	while (i-- > 0)
		if (items[i].fd >= 0)
			close(items[i].fd);
	free(items);
	errno = saved;
	return -1;
}
}

int ioctl(int fd, unsigned long request, ...)
{
	va_list ap;
	va_start(ap, request);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	if ((request == UDMABUF_CREATE || request == UDMABUF_CREATE_LIST) && is_dev_fd(fd)) {
		if (request == UDMABUF_CREATE) {
			const struct udmabuf_create *c = arg;
			struct udmabuf_create_item one = {
				.memfd = c->memfd, .offset = c->offset, .size = c->size,
			};
			return create(&one, 1, c->flags);
		}
		const struct udmabuf_create_list *l = arg;
		return create(l->list, l->count, l->flags);
	}
	int (*real)(int, unsigned long, ...) = dlsym(RTLD_NEXT, "ioctl");
	return real(fd, request, arg);
}

static void *map_buf(struct buf *b, void *addr, size_t len, int prot, int flags, off_t off)
{
	void *(*real)(void *, size_t, int, int, int, off_t) = dlsym(RTLD_NEXT, "mmap");
	if (off < 0 || (uint64_t)off + len > b->size || !(flags & MAP_SHARED)) {
		errno = EINVAL;
		return MAP_FAILED;
	}
	char *base = real(addr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS |
			  (flags & MAP_FIXED), -1, 0);
	if (base == MAP_FAILED)
		return MAP_FAILED;
	uint64_t pos = 0, done = 0;
	for (unsigned i = 0; i < b->count && done < len; i++) {
		const struct item *it = &b->items[i];
		uint64_t end = pos + it->size;
		if ((uint64_t)off < end) {
			uint64_t skip = (uint64_t)off > pos ? (uint64_t)off - pos : 0;
			uint64_t n = it->size - skip;
			if (n > len - done)
				n = len - done;
			if (real(base + done, n, prot, MAP_SHARED | MAP_FIXED, it->fd,
				 (off_t)(it->offset + skip)) == MAP_FAILED) {
				int saved = errno;
				munmap(base, len);
				errno = saved;
				return MAP_FAILED;
			}
			done += n;
		}
		pos = end;
	}
	return base;
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	if (fd >= 0) {
		pthread_mutex_lock(&lock);
		struct buf *b = find_buf(fd);
		if (b) {
			void *r = map_buf(b, addr, len, prot, flags, off);
			pthread_mutex_unlock(&lock);
			return r;
		}
		pthread_mutex_unlock(&lock);
	}
	void *(*real)(void *, size_t, int, int, int, off_t) = dlsym(RTLD_NEXT, "mmap");
	return real(addr, len, prot, flags, fd, off);
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return mmap(addr, len, prot, flags, fd, off);
}

int close(int fd)
{
	if (fd >= 0) {
		pthread_mutex_lock(&lock);
		struct buf *b = find_buf(fd);
		if (b) {
			for (unsigned i = 0; i < b->count; i++)
				REAL(close)(b->items[i].fd);
			free(b->items);
			b->items = NULL;
			b->fd = -1;
		}
		pthread_mutex_unlock(&lock);
	}
	return REAL(close)(fd);
}
