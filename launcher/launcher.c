/*
 * The warren launcher: the first bytes of the one file.
 *
 * The one file is this static program, then the frozen runtime (PyInstaller onedir, with the loader
 * and libc it needs), then the containerd payload, then a 128-byte trailer that says where each
 * part is. At launch:
 *
 *   1. read the trailer of /proc/self/exe (one pread of 128 bytes);
 *   2. pick the runtime cache: --runtime-dir / WARREN_RUNTIME_DIR, else /var/cache/warren/runtime
 *      for root (a cache: what it holds comes back from this file; one for every data dir, and
 *      a command refused for bad input has written nothing in any dir it names), else the user's
 *      cache dir (root's /var/cache/warren/runtime/<digest> is used read-only when complete);
 *   3. if <cache>/<digest>/ exists (it only ever appears whole: it is renamed into place), execve
 *      its executable: same pid, nothing written;
 *   4. otherwise take <cache>/.lock, look again, extract into <cache>/.tmp-<digest>-<pid>/,
 *      verifying each file's SHA-256 and the runtime's own digest, point the executable's ELF
 *      interpreter at the runtime's loader, fsync, rename into place, then execve.
 *
 * Never /tmp, no network, no dynamic linking. Every failure is one line on stderr and an exit code
 * from warren's table (warren_bundle/errors.py; tests/unit/test_launcher.py holds the two together).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "sha256.h"

/* Exit codes: warren_bundle/errors.py ExitCode. */
#define EXIT_ERROR 1
#define EXIT_USAGE 2
#define EXIT_PAYLOAD 3
#define EXIT_PERMISSION 4
#define EXIT_PLATFORM 5
#define EXIT_TIMEOUT 6
#define EXIT_CHECKSUM 8
#define EXIT_NOSPACE 11
#define EXIT_LAUNCH 12

#define TRAILER_SIZE 128
#define TRAILER_MAGIC "WARRENL1"
#define RUNTIME_MAGIC "WRT1"
#define DEFAULT_RUNTIME_ROOT "/var/cache/warren/runtime"
#define LOCK_TIMEOUT_S 300
#define CHUNK (256 * 1024)

/* The runtime's executable must be built for the machine this launcher is built for: a file packed
 * with another architecture's runtime says so instead of failing in execve (ENOEXEC). */
#if defined(__x86_64__)
#define RUNTIME_MACHINE EM_X86_64
#define LAUNCHER_ARCH "amd64"
#elif defined(__aarch64__)
#define RUNTIME_MACHINE EM_AARCH64
#define LAUNCHER_ARCH "arm64"
#else
#error "the launcher is built for linux-amd64 or linux-arm64"
#endif

extern char **environ;

static const char *tmp_to_remove; /* removed by die() */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)ftw;
    if (flag == FTW_DP)
        rmdir(path);
    else
        unlink(path);
    return 0;
}

static void rm_tree(const char *path) { nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

static void die(int code, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (tmp_to_remove)
        rm_tree(tmp_to_remove);
    for (char *p = msg; *p; p++)
        if (*p == '\n')
            *p = ' ';
    fprintf(stderr, "warren: %s\n", msg);
    exit(code);
}

/* --- the trailer ----------------------------------------------------------------------------- */

struct trailer {
    uint64_t runtime_off, runtime_len, payload_off, payload_len, desc_off, desc_len;
    char digest[65];
};

static uint64_t le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void read_trailer(int fd, const char *self, struct trailer *t) {
    struct stat st;
    unsigned char buf[TRAILER_SIZE];
    if (fstat(fd, &st) != 0 || st.st_size < TRAILER_SIZE ||
        pread(fd, buf, TRAILER_SIZE, st.st_size - TRAILER_SIZE) != TRAILER_SIZE ||
        memcmp(buf + TRAILER_SIZE - 8, TRAILER_MAGIC, 8) != 0)
        die(EXIT_PAYLOAD, "%s is not a whole warren file (no trailer: truncated or damaged); "
            "download it again", self);
    t->runtime_off = le64(buf);
    t->runtime_len = le64(buf + 8);
    t->payload_off = le64(buf + 16);
    t->payload_len = le64(buf + 24);
    t->desc_off = le64(buf + 32);
    t->desc_len = le64(buf + 40);
    memcpy(t->digest, buf + 48, 64);
    t->digest[64] = 0;
    uint64_t end = (uint64_t)st.st_size - TRAILER_SIZE;
    int ok = le32(buf + 112) == 1;
    for (int i = 0; i < 64 && ok; i++)
        ok = (t->digest[i] >= '0' && t->digest[i] <= '9') || (t->digest[i] >= 'a' && t->digest[i] <= 'f');
    if (!ok || t->runtime_off > end || t->runtime_len > end - t->runtime_off ||
        t->payload_off > end || t->payload_len > end - t->payload_off || t->desc_off > end ||
        t->desc_len > end - t->desc_off)
        die(EXIT_PAYLOAD, "%s has a damaged trailer; download it again", self);
}

/* --- where the runtime lives ------------------------------------------------------------------ */

static char *join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    if (n > PATH_MAX)
        die(EXIT_USAGE, "path too long: %s/%s; choose a shorter --runtime-dir", a, b);
    char *s = malloc(n);
    if (!s)
        die(EXIT_ERROR, "out of memory");
    snprintf(s, n, "%s/%s", a, b);
    return s;
}

/* The value of global option `name` (--name VALUE or --name=VALUE), scanning the options before
 * the command the way the CLI parses them; NULL when not given. */
static const char *global_option(int argc, char **argv, const char *name) {
    static const char *with_value[] = {"--data-dir", "--run-dir", "--config-dir", "--payload",
                                       "--runtime-dir", NULL};
    size_t len = strlen(name);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0 || a[0] != '-')
            return NULL;
        if (strncmp(a, name, len) == 0 && a[len] == '=')
            return a + len + 1;
        for (const char **w = with_value; *w; w++) {
            if (strcmp(a, *w) == 0) {
                if (i + 1 >= argc)
                    return NULL; /* the CLI reports the missing value */
                if (strcmp(a, name) == 0)
                    return argv[i + 1];
                i++;
                break;
            }
        }
    }
    return NULL;
}

static const char *checked_dir_value(const char *value, const char *what) {
    if (value[0] == 0)
        die(EXIT_USAGE, "%s is empty; give an absolute path, or unset it for the default", what);
    if (value[0] != '/')
        die(EXIT_USAGE, "%s '%s' is a relative path; give an absolute path", what, value);
    return value;
}

/* The option's value, else the environment's (empty counts as given), else NULL. */
static const char *option_or_env(int argc, char **argv, const char *opt, const char *env) {
    const char *v = global_option(argc, argv, opt);
    if (v)
        return checked_dir_value(v, opt);
    v = getenv(env);
    if (v)
        return checked_dir_value(v, env);
    return NULL;
}

static char *user_cache_root(void) {
    const char *xdg = getenv("XDG_CACHE_HOME");
    if (xdg && xdg[0] == '/')
        return join(xdg, "warren/runtime");
    const char *home = getenv("HOME");
    if (!home || home[0] != '/') {
        struct passwd *pw = getpwuid(geteuid());
        home = pw ? pw->pw_dir : NULL;
    }
    if (!home || home[0] != '/')
        die(EXIT_USAGE, "no home directory for the runtime cache; set WARREN_RUNTIME_DIR to a dir "
            "of yours on a mount that allows exec");
    return join(home, ".cache/warren/runtime");
}

/* A dir we may trust: a real dir (not a symlink), owned by us or root, writable by nobody else. */
static int trusted_dir(const struct stat *st) {
    return S_ISDIR(st->st_mode) && (st->st_uid == geteuid() || st->st_uid == 0) &&
           (st->st_mode & (S_IWGRP | S_IWOTH)) == 0;
}

static void require_trusted(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0)
        die(EXIT_PERMISSION, "cannot read the runtime dir %s: %s", path, strerror(errno));
    if (S_ISLNK(st.st_mode))
        die(EXIT_PERMISSION, "the runtime dir %s is a symlink; remove it, or set WARREN_RUNTIME_DIR "
            "to a dir of yours", path);
    if (!trusted_dir(&st))
        die(EXIT_PERMISSION, "the runtime dir %s is %s; it must be owned by you or root and "
            "writable by no one else (chmod go-w), or set WARREN_RUNTIME_DIR to a dir of yours",
            path, S_ISDIR(st.st_mode) ? "writable by others or owned by another user" : "not a directory");
}

/* <dir>/<digest> is complete: renamed into place whole, trusted, its executable present. */
static int complete(const char *final, const char *exe) {
    struct stat st;
    if (lstat(final, &st) != 0 || !trusted_dir(&st))
        return 0;
    return lstat(exe, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & S_IXUSR);
}

/* mkdir -p; 0 or the errno of the first component that could not be made. */
static int try_mkdirs(const char *path, mode_t mode, char *failed, size_t failed_len) {
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, mode) != 0 && errno != EEXIST) {
                int err = errno;
                snprintf(failed, failed_len, "%s", buf);
                return err;
            }
            *p = c;
            if (c == 0)
                break;
        }
    }
    return 0;
}

static void mkdirs(const char *path, mode_t mode) {
    char failed[PATH_MAX];
    int err = try_mkdirs(path, mode, failed, sizeof failed);
    if (err == ENOSPC || err == EDQUOT)
        die(EXIT_NOSPACE, "no space left to create %s; free space, or set WARREN_RUNTIME_DIR "
            "elsewhere", failed);
    if (err)
        die(EXIT_PERMISSION, "cannot create the runtime dir %s (%s: %s); set WARREN_RUNTIME_DIR to "
            "a dir you can write", path, failed, strerror(err));
}

/* --- reading the runtime archive ------------------------------------------------------------- */

struct reader {
    int fd;
    uint64_t pos, end;
    const char *self;
    sha256_ctx whole; /* the digest of the runtime archive, checked against the trailer's */
};

static void rd(struct reader *r, void *buf, size_t n) {
    if (n > r->end - r->pos)
        die(EXIT_PAYLOAD, "%s: the runtime archive ends early (truncated file); download it again", r->self);
    unsigned char *p = buf;
    size_t got = 0;
    while (got < n) {
        ssize_t k = pread(r->fd, p + got, n - got, (off_t)(r->pos + got));
        if (k <= 0)
            die(EXIT_PAYLOAD, "%s: cannot read the runtime archive: %s", r->self,
                k < 0 ? strerror(errno) : "unexpected end of file");
        got += (size_t)k;
    }
    sha256_update(&r->whole, buf, n);
    r->pos += n;
}

static uint64_t rd64(struct reader *r) {
    unsigned char b[8];
    rd(r, b, 8);
    return le64(b);
}

static uint32_t rd32(struct reader *r) {
    unsigned char b[4];
    rd(r, b, 4);
    return le32(b);
}

static char *rdstr(struct reader *r) {
    unsigned char b[2];
    rd(r, b, 2);
    size_t n = (size_t)b[0] | (size_t)b[1] << 8;
    char *s = malloc(n + 1);
    if (!s)
        die(EXIT_ERROR, "out of memory");
    rd(r, s, n);
    s[n] = 0;
    if (strlen(s) != n)
        die(EXIT_PAYLOAD, "%s: a name in the runtime archive holds a NUL byte", r->self);
    return s;
}

/* A relative path with no empty, "." or ".." component: nothing lands outside the runtime dir. */
static void check_rel(const struct reader *r, const char *p) {
    int ok = p[0] != 0 && p[0] != '/';
    for (const char *c = p; ok && *c;) {
        const char *e = strchr(c, '/');
        size_t n = e ? (size_t)(e - c) : strlen(c);
        ok = n > 0 && !(n == 1 && c[0] == '.') && !(n == 2 && c[0] == '.' && c[1] == '.');
        c += n + (e ? 1 : 0);
        if (e && !*c)
            ok = 0;
    }
    if (!ok)
        die(EXIT_PAYLOAD, "%s: the runtime archive names an unsafe path '%s'", r->self, p);
}

static void write_all(int fd, const unsigned char *p, size_t n, const char *path) {
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            if (errno == ENOSPC || errno == EDQUOT)
                die(EXIT_NOSPACE, "no space left writing %s; free space, or set WARREN_RUNTIME_DIR "
                    "to a dir with room", path);
            die(EXIT_ERROR, "cannot write %s: %s", path, strerror(errno));
        }
        p += k;
        n -= (size_t)k;
    }
}

static void extract_file(struct reader *r, const char *path, uint32_t mode, uint64_t size,
                         uint64_t stored, const unsigned char want[32]) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (errno == ENOSPC || errno == EDQUOT)
            die(EXIT_NOSPACE, "no space left creating %s; free space, or set WARREN_RUNTIME_DIR "
                "to a dir with room", path);
        die(EXIT_ERROR, "cannot create %s: %s", path, strerror(errno));
    }
    static unsigned char in[CHUNK], out[CHUNK];
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit(&z) != Z_OK)
        die(EXIT_ERROR, "inflateInit failed");
    sha256_ctx h;
    sha256_init(&h);
    uint64_t left = stored, written = 0;
    int ret = Z_OK;
    while (ret != Z_STREAM_END) {
        if (z.avail_in == 0) {
            if (left == 0)
                break;
            size_t n = left < CHUNK ? (size_t)left : CHUNK;
            rd(r, in, n);
            left -= n;
            z.next_in = in;
            z.avail_in = (uInt)n;
        }
        z.next_out = out;
        z.avail_out = CHUNK;
        ret = inflate(&z, Z_NO_FLUSH);
        if (ret != Z_OK && ret != Z_STREAM_END)
            die(EXIT_PAYLOAD, "%s: %s is damaged in the runtime archive (%s); download it again",
                r->self, path, z.msg ? z.msg : "inflate error");
        size_t n = CHUNK - z.avail_out;
        written += n;
        if (written > size)
            break;
        sha256_update(&h, out, n);
        write_all(fd, out, n, path);
    }
    inflateEnd(&z);
    if (ret != Z_STREAM_END || left != 0 || written != size)
        die(EXIT_PAYLOAD, "%s: %s is damaged in the runtime archive (size); download it again",
            r->self, path);
    unsigned char got[32];
    sha256_final(&h, got);
    if (memcmp(got, want, 32) != 0)
        die(EXIT_CHECKSUM, "%s: %s does not match its SHA-256 in the runtime archive; download the "
            "file again", r->self, path);
    if (fchmod(fd, mode & 07755) != 0 || fsync(fd) != 0 || close(fd) != 0) {
        if (errno == ENOSPC || errno == EDQUOT)
            die(EXIT_NOSPACE, "no space left writing %s; free space, or set WARREN_RUNTIME_DIR "
                "to a dir with room", path);
        die(EXIT_ERROR, "cannot finish %s: %s", path, strerror(errno));
    }
}

/* Point the ELF interpreter of `path` at `interp`: the frozen executable is built with a long
 * placeholder there, so the real path fits in place (what staticx does at every launch, done once). */
static void set_interp(const char *path, const char *interp) {
    int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    Elf64_Ehdr eh;
    if (fd < 0 || pread(fd, &eh, sizeof eh, 0) != sizeof eh || memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
        eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_phentsize != sizeof(Elf64_Phdr))
        die(EXIT_PAYLOAD, "%s is not a 64-bit ELF executable", path);
    if (eh.e_ident[EI_DATA] != ELFDATA2LSB || eh.e_machine != RUNTIME_MACHINE)
        die(EXIT_PAYLOAD, "%s is not a linux-%s executable (ELF machine %u): this file was packed "
            "with another architecture's runtime; download the warren-linux-%s file again",
            path, LAUNCHER_ARCH, (unsigned)eh.e_machine, LAUNCHER_ARCH);
    for (int i = 0; i < eh.e_phnum; i++) {
        Elf64_Phdr ph;
        if (pread(fd, &ph, sizeof ph, (off_t)(eh.e_phoff + (uint64_t)i * sizeof ph)) != sizeof ph)
            break;
        if (ph.p_type != PT_INTERP)
            continue;
        size_t n = strlen(interp) + 1;
        if (n > ph.p_filesz)
            die(EXIT_USAGE, "the runtime path %s is longer than %llu bytes; set WARREN_RUNTIME_DIR "
                "to a shorter path", interp, (unsigned long long)ph.p_filesz - 1);
        char *buf = calloc(1, ph.p_filesz);
        if (!buf)
            die(EXIT_ERROR, "out of memory");
        memcpy(buf, interp, n);
        if (pwrite(fd, buf, ph.p_filesz, (off_t)ph.p_offset) != (ssize_t)ph.p_filesz || fsync(fd) != 0)
            die(EXIT_ERROR, "cannot write %s: %s", path, strerror(errno));
        free(buf);
        close(fd);
        return;
    }
    die(EXIT_PAYLOAD, "%s has no ELF interpreter to point at the runtime's loader", path);
}

static int fsync_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)ftw;
    if (flag == FTW_DP || flag == FTW_D) {
        int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0) {
            fsync(fd);
            close(fd);
        }
    }
    return 0;
}

static void fsync_dir(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* Every dir of the runtime: 0755 for root (socket-group users run it too), 0700 for a user. */
static int chmod_dirs(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)ftw;
    (void)st;
    if (flag == FTW_D || flag == FTW_DP)
        chmod(path, geteuid() == 0 ? 0755 : 0700);
    return 0;
}

/* Build <root>/<digest> from the archive; return the executable's path relative to it. */
static char *extract(int self_fd, const char *self, const struct trailer *t, const char *root,
                     const char *final) {
    char name[128];
    snprintf(name, sizeof name, ".tmp-%.16s-%ld", t->digest, (long)getpid());
    char *tmp = join(root, name);
    tmp_to_remove = tmp;
    if (mkdir(tmp, 0700) != 0) {
        if (errno == ENOSPC || errno == EDQUOT)
            die(EXIT_NOSPACE, "no space left to create %s; free space, or set WARREN_RUNTIME_DIR "
                "elsewhere", tmp);
        die(EXIT_PERMISSION, "cannot create %s: %s", tmp, strerror(errno));
    }
    struct reader r = {.fd = self_fd, .pos = t->runtime_off, .end = t->runtime_off + t->runtime_len, .self = self};
    sha256_init(&r.whole);
    char magic[4];
    rd(&r, magic, 4);
    if (memcmp(magic, RUNTIME_MAGIC, 4) != 0)
        die(EXIT_PAYLOAD, "%s: no runtime archive where the trailer says; download it again", self);
    char *exe_rel = rdstr(&r);
    char *interp_rel = rdstr(&r);
    if (strcmp(exe_rel, "warren") != 0)
        die(EXIT_PAYLOAD, "%s: the runtime archive's executable is '%s', not 'warren'", self, exe_rel);
    if (interp_rel[0])
        check_rel(&r, interp_rel);
    uint32_t count = rd32(&r);
    for (uint32_t i = 0; i < count; i++) {
        unsigned char type;
        rd(&r, &type, 1);
        char *rel = rdstr(&r);
        check_rel(&r, rel);
        uint32_t mode = rd32(&r);
        uint64_t size = rd64(&r), stored = rd64(&r);
        unsigned char sum[32];
        rd(&r, sum, 32);
        char *path = join(tmp, rel);
        if (type == 'd') {
            if (mkdir(path, 0700) != 0)
                die(errno == ENOSPC ? EXIT_NOSPACE : EXIT_ERROR, "cannot create %s: %s", path, strerror(errno));
        } else if (type == 'f') {
            extract_file(&r, path, mode, size, stored, sum);
        } else if (type == 'l') {
            if (size >= PATH_MAX)
                die(EXIT_PAYLOAD, "%s: a link in the runtime archive is too long", self);
            char target[PATH_MAX];
            rd(&r, target, (size_t)size);
            target[size] = 0;
            if (target[0] == '/' || strstr(target, ".."))
                die(EXIT_PAYLOAD, "%s: the runtime archive links %s outside itself", self, rel);
            if (symlink(target, path) != 0)
                die(errno == ENOSPC ? EXIT_NOSPACE : EXIT_ERROR, "cannot create %s: %s", path, strerror(errno));
        } else {
            die(EXIT_PAYLOAD, "%s: unknown entry type in the runtime archive; download it again", self);
        }
        free(path);
        free(rel);
    }
    if (r.pos != r.end)
        die(EXIT_PAYLOAD, "%s: the runtime archive has trailing bytes; download it again", self);
    unsigned char whole[32];
    sha256_final(&r.whole, whole);
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", whole[i]);
    if (strcmp(hex, t->digest) != 0)
        die(EXIT_CHECKSUM, "%s: the runtime archive's SHA-256 is %s, not %s as recorded; download "
            "the file again", self, hex, t->digest);
    if (interp_rel[0]) {
        char *interp = join(final, interp_rel);
        char *exe_tmp = join(tmp, exe_rel);
        set_interp(exe_tmp, interp);
        free(interp);
        free(exe_tmp);
    }
    /* Directories get their modes last (built 0700, so nobody reads a half-written tree). */
    nftw(tmp, chmod_dirs, 16, FTW_PHYS);
    nftw(tmp, fsync_entry, 16, FTW_DEPTH | FTW_PHYS);
    struct stat st;
    /* A dir left at <final> that is not complete (its executable removed): moved aside first. */
    if (lstat(final, &st) == 0) {
        char aside[128];
        snprintf(aside, sizeof aside, ".tmp-old-%.16s-%ld", t->digest, (long)getpid());
        char *old = join(root, aside);
        if (rename(final, old) != 0)
            die(EXIT_ERROR, "cannot move the incomplete %s aside: %s", final, strerror(errno));
        rm_tree(old);
        free(old);
    }
    if (rename(tmp, final) != 0)
        die(EXIT_ERROR, "cannot rename %s to %s: %s", tmp, final, strerror(errno));
    tmp_to_remove = NULL;
    fsync_dir(root);
    free(tmp);
    free(interp_rel);
    return exe_rel;
}

static void remove_stale(const char *root) {
    DIR *d = opendir(root);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, ".tmp-", 5) == 0) {
            char *p = join(root, e->d_name);
            rm_tree(p);
            free(p);
        }
    }
    closedir(d);
}

static int lock_root(const char *root) {
    char *lock = join(root, ".lock");
    int fd = open(lock, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        die(EXIT_PERMISSION, "cannot open the runtime lock %s: %s", lock, strerror(errno));
    struct timespec pause = {0, 50 * 1000 * 1000};
    for (int waited = 0; flock(fd, LOCK_EX | LOCK_NB) != 0; waited++) {
        if (errno != EWOULDBLOCK)
            die(EXIT_ERROR, "cannot lock %s: %s", lock, strerror(errno));
        if (waited >= LOCK_TIMEOUT_S * 20)
            die(EXIT_TIMEOUT, "another warren has held %s for %d s while extracting; check "
                "it with 'fuser %s', or remove the runtime dir", lock, LOCK_TIMEOUT_S, lock);
        nanosleep(&pause, NULL);
    }
    free(lock);
    return fd;
}

static int debug;

static void say(const char *fmt, ...) {
    if (!debug)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "warren-launcher: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* Hold a shared flock on <final> for as long as the process (and the runtime it becomes) lives:
 * the fd is not close-on-exec. A prune takes the exclusive lock, so it never removes a runtime in
 * use. Returns 0 when <final> was replaced or removed meanwhile (the caller looks again). */
static int hold(const char *final) {
    int fd = open(final, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    if (fd < 0)
        return 0;
    struct stat held, now;
    if (flock(fd, LOCK_SH) != 0 || fstat(fd, &held) != 0 || lstat(final, &now) != 0 ||
        held.st_ino != now.st_ino || held.st_dev != now.st_dev) {
        close(fd);
        return 0;
    }
    return 1;
}

static void launch(const char *exe, const char *final, const char *self, char **argv) {
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + 3, sizeof *env);
    if (!env)
        die(EXIT_ERROR, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "_WARREN_ONEFILE=", 16) != 0 &&
            strncmp(environ[i], "_WARREN_RUNTIME=", 16) != 0)
            env[k++] = environ[i];
    char *a = malloc(strlen(self) + 17), *b = malloc(strlen(final) + 17);
    if (!a || !b)
        die(EXIT_ERROR, "out of memory");
    sprintf(a, "_WARREN_ONEFILE=%s", self);
    sprintf(b, "_WARREN_RUNTIME=%s", final);
    env[k++] = a;
    env[k++] = b;
    env[k] = NULL;
    say("exec %s", exe);
    execve(exe, argv, env);
    int err = errno;
    struct statvfs vfs;
    if (err == EACCES && statvfs(final, &vfs) == 0 && (vfs.f_flag & ST_NOEXEC))
        die(EXIT_PLATFORM, "the runtime dir %s is on a noexec mount; set WARREN_RUNTIME_DIR (or "
            "--runtime-dir) to a dir on a mount that allows exec", final);
    die(EXIT_LAUNCH, "cannot run %s: %s; remove %s and run warren again", exe, strerror(err), final);
}

int main(int argc, char **argv) {
    const char *dbg = getenv("WARREN_LAUNCHER_DEBUG");
    debug = dbg && dbg[0] && strcmp(dbg, "0") != 0;
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        die(EXIT_PLATFORM, "cannot read /proc/self/exe: %s; mount /proc", strerror(errno));
    self[n] = 0;
    int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        die(EXIT_PLATFORM, "cannot open /proc/self/exe: %s", strerror(errno));
    struct trailer t;
    read_trailer(fd, self, &t);

    const char *root = NULL;
    const char *given = option_or_env(argc, argv, "--runtime-dir", "WARREN_RUNTIME_DIR");
    const char *system_root = DEFAULT_RUNTIME_ROOT;
    if (given) {
        root = given;
    } else if (geteuid() == 0) {
        /* The fast path first: a complete runtime is run as it is, with no mkdir asked. */
        char *final = join(system_root, t.digest);
        char *exe = join(final, "warren");
        if (complete(final, exe) && hold(final))
            launch(exe, final, self, argv);
        free(exe);
        free(final);
        /* Where root cannot write (a read-only /var), the runtime goes to root's own cache. */
        char failed[PATH_MAX];
        int err = try_mkdirs(system_root, 0755, failed, sizeof failed);
        root = system_root;
        if (err == EROFS || err == EACCES || err == EPERM) {
            say("cannot create %s (%s): using the user cache", failed, strerror(err));
            root = user_cache_root();
        }
    } else {
        /* A complete runtime that root made is as good as ours, and costs this user nothing. */
        char *final = join(system_root, t.digest);
        char *exe = join(final, "warren");
        struct stat st;
        if (lstat(system_root, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == 0 &&
            (st.st_mode & (S_IWGRP | S_IWOTH)) == 0 && complete(final, exe) && hold(final))
            launch(exe, final, self, argv);
        root = user_cache_root();
    }
    char *final = join(root, t.digest);
    /* The executable is named in the archive; "warren" is what make's pack step writes, and the
     * fast path looks for it without reading the archive. */
    char *exe = join(final, "warren");
    if (complete(final, exe) && hold(final))
        launch(exe, final, self, argv);

    mkdirs(root, geteuid() == 0 ? 0755 : 0700);
    require_trusted(root);
    struct statvfs vfs;
    if (statvfs(root, &vfs) == 0 && (vfs.f_flag & ST_NOEXEC))
        die(EXIT_PLATFORM, "the runtime dir %s is on a noexec mount; set WARREN_RUNTIME_DIR (or "
            "--runtime-dir) to a dir on a mount that allows exec", root);
    int lock = lock_root(root);
    if (!complete(final, exe)) {
        remove_stale(root);
        say("extracting the runtime into %s", final);
        free(extract(fd, self, &t, root, final));
    }
    /* Under the root's lock, which a prune takes too: <final> cannot go away before we hold it. */
    if (!hold(final))
        die(EXIT_ERROR, "the runtime dir %s vanished while starting; run warren again", final);
    close(lock);
    close(fd);
    launch(exe, final, self, argv);
    return EXIT_LAUNCH;
}
