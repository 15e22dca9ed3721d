/*
 * recovery/powerloss.c — crash states from a recorded trace, and the
 * power-loss sessions of `keel crashtest --mode powerloss`
 * (recovery/powerloss.h has the model and the checks).
 *
 * Invariants (besides PL1-PL4 of powerloss.h):
 *   PW1 Loading resolves every record against the volatile namespace (what
 *       the running process saw): each file and directory is an inode
 *       number, each handle is bound to the inode its OPEN named, so a
 *       crash state applies an operation to the right file whatever names
 *       it has in that state.
 *   PW2 durable_at of an operation is the index of the first sync that
 *       covers it (SIZE_MAX: none): a data operation by a sync of its file,
 *       a name operation by a sync of its directory (a rename: of both); a
 *       write through an O_DSYNC descriptor is its own.
 *   PW3 The session's children run with the recorder only for the traced
 *       run; everything else (the part-way run and snapshot of the restore
 *       scenario, the crash-state checks) runs untraced, the checks in
 *       this process.
 *   PW4 Trial T's crash point, policy and seed depend only on the trace,
 *       the session seed and the trial count (PL3).
 */
#include "recovery/powerloss.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "common/diag.h"
#include "keel/kernel.h"
#include "keel/recovery.h"
#include "keel/wal.h"
#include "recovery/crashtest.h"
#include "recovery/plrec_format.h"

extern char **environ;

#define DEFAULT_TRIALS            200
#define DEFAULT_CHECKPOINT_CRANKS 64
/* Extra SUBSET states at the end of the trace (the process finished and
 * then the power went): where a published-but-unsynced state shows. */
#define END_SUBSETS 8
#define TEAR_BYTES  512
/* When every crash point has its states and trials are left: at most this
 * many more subsets of each. */
#define MAX_EXTRA_SUBSETS 32
/* The scratch directory's path, so that its own paths fit in PATH_MAX. */
#define SCRATCH_MAX 1100

enum { K_NONE = 0, K_DATA = 1, K_DIR = 2 };

typedef struct pl_op {
    uint8_t op;
    uint8_t kind;
    uint8_t is_sync;
    uint8_t dir_sync; /* is_sync, of a directory */
    uint32_t ino;     /* data: the file; sync: what is synced; create,
                         mkdir: the new inode */
    uint32_t p1, p2;  /* name ops: the directories */
    const char *n1, *n2;
    uint32_t n1len, n2len;
    uint64_t off; /* write: offset; truncate: new length */
    uint64_t len; /* write: bytes */
    const uint8_t *data;
    size_t durable_at; /* PW2 */
    uint8_t need;      /* durability pass: directories still to sync */
} pl_op;

typedef struct pl_name {
    char *path;
    uint32_t ino;
} pl_name;

struct keel__pl_trace {
    uint8_t *buf;
    size_t nops;
    pl_op *ops;
    uint32_t ninodes;
    uint8_t *is_dir; /* [ninodes] */
    char **path;     /* [ninodes]: its last name in the trace */
    int no_dir_sync;
};

/* ---- small things ---------------------------------------------------------
 */

static int read_file(const char *path, uint8_t **out, size_t *len,
                     keel_diag *diag)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t cap = 0, n = 0;
    if (f == NULL) {
        int rc = keel_translate_errno(errno);
        return keel__diag(diag, rc, "%s: cannot read: %s", path,
                          keel_strerror(rc));
    }
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 1u << 20;
            uint8_t *nb = realloc(buf, cap);
            if (nb == NULL) {
                free(buf);
                fclose(f);
                return keel__diag(diag, KEEL_ENOMEM, "out of memory");
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            break;
        }
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return keel__diag(diag, KEEL_EIO, "%s: read error", path);
    }
    *out = buf;
    *len = n;
    return KEEL_OK;
}

/* ---- loading a trace (PW1) ------------------------------------------------
 */

typedef struct loader {
    keel__pl_trace *t;
    pl_name *names;
    size_t nnames, capnames;
    uint32_t *handle_ino;
    uint8_t *handle_dsync;
    size_t caphandles;
    size_t capinodes;
    keel_diag *diag;
} loader;

static int find_name(const loader *l, const char *p, size_t len)
{
    for (size_t i = 0; i < l->nnames; i++) {
        if (strlen(l->names[i].path) == len &&
            memcmp(l->names[i].path, p, len) == 0) {
            return (int)i;
        }
    }
    return -1;
}

static int new_inode(loader *l, int dir, uint32_t *ino)
{
    keel__pl_trace *t = l->t;
    if (t->ninodes == l->capinodes) {
        size_t cap = l->capinodes ? l->capinodes * 2 : 64;
        uint8_t *nd = realloc(t->is_dir, cap);
        if (nd == NULL) {
            return KEEL_ENOMEM;
        }
        t->is_dir = nd;
        char **np = realloc(t->path, cap * sizeof(*np));
        if (np == NULL) {
            return KEEL_ENOMEM;
        }
        t->path = np;
        l->capinodes = cap;
    }
    t->is_dir[t->ninodes] = (uint8_t)dir;
    t->path[t->ninodes] = NULL;
    *ino = t->ninodes++;
    return KEEL_OK;
}

static int add_name(loader *l, const char *p, size_t len, uint32_t ino)
{
    if (l->nnames == l->capnames) {
        size_t cap = l->capnames ? l->capnames * 2 : 64;
        pl_name *nn = realloc(l->names, cap * sizeof(*nn));
        if (nn == NULL) {
            return KEEL_ENOMEM;
        }
        l->names = nn;
        l->capnames = cap;
    }
    char *s = strndup(p, len);
    char *s2 = strndup(p, len);
    if (s == NULL || s2 == NULL) {
        free(s);
        free(s2);
        return KEEL_ENOMEM;
    }
    l->names[l->nnames++] = (pl_name){s, ino};
    free(l->t->path[ino]);
    l->t->path[ino] = s2;
    return KEEL_OK;
}

static void remove_name(loader *l, int i)
{
    free(l->names[i].path);
    l->names[i] = l->names[--l->nnames];
}

/* The parent directory's inode and the last component of p. */
static int split(loader *l, size_t j, const char *p, size_t len, uint32_t *dir,
                 const char **name, uint32_t *nlen)
{
    size_t cut = len;
    while (cut > 0 && p[cut - 1] != '/') {
        cut--;
    }
    *name = p + cut;
    *nlen = (uint32_t)(len - cut);
    int i = cut == 0 ? find_name(l, ".", 1) : find_name(l, p, cut - 1);
    if (i < 0 || !l->t->is_dir[l->names[i].ino] || *nlen == 0) {
        return keel__diag(l->diag, KEEL_ECORRUPT,
                          "trace: operation %zu: %.*s: its directory is not "
                          "in the trace",
                          j, (int)len, p);
    }
    *dir = l->names[i].ino;
    return KEEL_OK;
}

static int bind_handle(loader *l, uint32_t h, uint32_t ino, int dsync)
{
    if (h >= l->caphandles) {
        size_t cap = l->caphandles ? l->caphandles : 64;
        while (cap <= h) {
            cap *= 2;
        }
        uint32_t *ni = realloc(l->handle_ino, cap * sizeof(*ni));
        if (ni == NULL) {
            return KEEL_ENOMEM;
        }
        l->handle_ino = ni;
        uint8_t *nd = realloc(l->handle_dsync, cap);
        if (nd == NULL) {
            return KEEL_ENOMEM;
        }
        l->handle_dsync = nd;
        memset(l->handle_ino + l->caphandles, 0xff,
               (cap - l->caphandles) * sizeof(*ni));
        memset(l->handle_dsync + l->caphandles, 0, cap - l->caphandles);
        l->caphandles = cap;
    }
    l->handle_ino[h] = ino;
    l->handle_dsync[h] = (uint8_t)dsync;
    return KEEL_OK;
}

static int handle_ino(loader *l, size_t j, uint32_t h, uint32_t *ino)
{
    if (h >= l->caphandles || l->handle_ino[h] == UINT32_MAX) {
        return keel__diag(
            l->diag, KEEL_ECORRUPT,
            "trace: operation %zu: handle %" PRIu32 " was never opened", j, h);
    }
    *ino = l->handle_ino[h];
    return KEEL_OK;
}

/* One record into op j, against the volatile namespace. */
static int resolve(loader *l, size_t j, const keel__plrec_hdr *h,
                   const char *p1, const char *p2, const uint8_t *data)
{
    pl_op *op = &l->t->ops[j];
    int rc = KEEL_OK;
    int i;
    memset(op, 0, sizeof(*op));
    op->op = h->op;
    op->durable_at = SIZE_MAX;
    switch (h->op) {
    case KEEL__PLREC_OPEN:
        i = find_name(l, p1, h->path_len);
        if (i >= 0) {
            op->ino = l->names[i].ino;
            if ((h->flags & O_TRUNC) != 0 &&
                (h->flags & O_ACCMODE) != O_RDONLY && !l->t->is_dir[op->ino]) {
                op->kind = K_DATA;
                op->op = KEEL__PLREC_TRUNCATE;
                op->off = 0;
            }
        } else if ((h->flags & O_CREAT) != 0) {
            rc = split(l, j, p1, h->path_len, &op->p1, &op->n1, &op->n1len);
            if (rc == KEEL_OK) {
                rc = new_inode(l, 0, &op->ino);
            }
            if (rc == KEEL_OK) {
                rc = add_name(l, p1, h->path_len, op->ino);
            }
            op->kind = K_DIR;
        } else {
            return keel__diag(l->diag, KEEL_ECORRUPT,
                              "trace: operation %zu opens %.*s, which the "
                              "trace never made (the root must start empty)",
                              j, (int)h->path_len, p1);
        }
        if (rc == KEEL_OK) {
            rc = bind_handle(l, h->handle, op->ino, (h->flags & O_DSYNC) != 0);
        }
        break;
    case KEEL__PLREC_WRITE:
    case KEEL__PLREC_TRUNCATE:
        rc = handle_ino(l, j, h->handle, &op->ino);
        op->kind = K_DATA;
        op->off = h->offset;
        op->len = h->op == KEEL__PLREC_WRITE ? h->data_len : 0;
        op->data = data;
        if (rc == KEEL_OK && h->op == KEEL__PLREC_WRITE &&
            l->handle_dsync[h->handle]) {
            op->durable_at = j; /* PW2 */
        }
        break;
    case KEEL__PLREC_RENAME:
        i = find_name(l, p1, h->path_len);
        if (i < 0) {
            return keel__diag(l->diag, KEEL_ECORRUPT,
                              "trace: operation %zu renames %.*s, which the "
                              "trace never made",
                              j, (int)h->path_len, p1);
        }
        op->kind = K_DIR;
        op->ino = l->names[i].ino;
        rc = split(l, j, p1, h->path_len, &op->p1, &op->n1, &op->n1len);
        if (rc == KEEL_OK) {
            rc = split(l, j, p2, h->path2_len, &op->p2, &op->n2, &op->n2len);
        }
        if (rc == KEEL_OK) {
            int d = find_name(l, p2, h->path2_len);
            if (d >= 0) {
                remove_name(l, d);
            }
            /* the name and everything below it (a directory) */
            for (size_t k = 0; rc == KEEL_OK && k < l->nnames; k++) {
                const char *s = l->names[k].path;
                size_t sl = strlen(s);
                if (sl < h->path_len || memcmp(s, p1, h->path_len) != 0 ||
                    (sl > h->path_len && s[h->path_len] != '/')) {
                    continue;
                }
                size_t nl = h->path2_len + (sl - h->path_len);
                char *ns = malloc(nl + 1);
                if (ns == NULL) {
                    rc = KEEL_ENOMEM;
                    break;
                }
                memcpy(ns, p2, h->path2_len);
                memcpy(ns + h->path2_len, s + h->path_len, sl - h->path_len);
                ns[nl] = '\0';
                free(l->names[k].path);
                l->names[k].path = ns;
                char *ps = strdup(ns);
                if (ps == NULL) {
                    rc = KEEL_ENOMEM;
                    break;
                }
                free(l->t->path[l->names[k].ino]);
                l->t->path[l->names[k].ino] = ps;
            }
        }
        break;
    case KEEL__PLREC_UNLINK:
    case KEEL__PLREC_RMDIR:
        i = find_name(l, p1, h->path_len);
        if (i < 0) {
            return keel__diag(l->diag, KEEL_ECORRUPT,
                              "trace: operation %zu removes %.*s, which the "
                              "trace never made",
                              j, (int)h->path_len, p1);
        }
        op->kind = K_DIR;
        op->ino = l->names[i].ino;
        rc = split(l, j, p1, h->path_len, &op->p1, &op->n1, &op->n1len);
        remove_name(l, i);
        break;
    case KEEL__PLREC_MKDIR:
        op->kind = K_DIR;
        rc = split(l, j, p1, h->path_len, &op->p1, &op->n1, &op->n1len);
        if (rc == KEEL_OK) {
            rc = new_inode(l, 1, &op->ino);
        }
        if (rc == KEEL_OK) {
            rc = add_name(l, p1, h->path_len, op->ino);
        }
        break;
    case KEEL__PLREC_FSYNC:
    case KEEL__PLREC_FDATASYNC:
    case KEEL__PLREC_MSYNC:
        rc = handle_ino(l, j, h->handle, &op->ino);
        op->is_sync = 1;
        op->dir_sync = rc == KEEL_OK && l->t->is_dir[op->ino];
        break;
    case KEEL__PLREC_SYNC_ALL:
        op->is_sync = 1;
        break;
    case KEEL__PLREC_SYNC_RANGE:
        break; /* makes nothing durable */
    default:
        return keel__diag(l->diag, KEEL_ECORRUPT,
                          "trace: operation %zu: unknown op %u", j, h->op);
    }
    if (rc == KEEL_ENOMEM) {
        keel__diag(l->diag, rc, "out of memory");
    }
    return rc;
}

/* PW2: durable_at of every operation. */
static int durability(keel__pl_trace *t)
{
    size_t *pend = malloc((t->nops + 1) * sizeof(*pend));
    size_t np = 0;
    if (pend == NULL) {
        return KEEL_ENOMEM;
    }
    for (size_t j = 0; j < t->nops; j++) {
        pl_op *op = &t->ops[j];
        if (op->kind == K_DATA && op->durable_at == j) {
            continue; /* O_DSYNC: its own */
        }
        if (op->kind != K_NONE) {
            op->durable_at = SIZE_MAX;
            /* bit 1: p1 to sync; bit 2: p2 (a rename across
             * directories); data: bit 1, the file */
            op->need = op->kind == K_DIR && op->op == KEEL__PLREC_RENAME &&
                               op->p1 != op->p2
                           ? 3
                           : 1;
            pend[np++] = j;
            continue;
        }
        if (!op->is_sync || (op->dir_sync && t->no_dir_sync)) {
            continue;
        }
        int all = op->op == KEEL__PLREC_SYNC_ALL;
        size_t keep = 0;
        for (size_t k = 0; k < np; k++) {
            pl_op *q = &t->ops[pend[k]];
            if (all) {
                q->need = 0;
            } else if (q->kind == K_DATA && !op->dir_sync) {
                if (q->ino == op->ino) {
                    q->need = 0;
                }
            } else if (q->kind == K_DIR && op->dir_sync) {
                if ((q->need & 1) != 0 && q->p1 == op->ino) {
                    q->need &= (uint8_t)~1u;
                }
                if ((q->need & 2) != 0 && q->p2 == op->ino) {
                    q->need &= (uint8_t)~2u;
                }
            }
            if (q->need == 0) {
                q->durable_at = j;
            } else {
                pend[keep++] = pend[k];
            }
        }
        np = keep;
    }
    free(pend);
    return KEEL_OK;
}

int keel__pl_trace_load(const char *path, keel__pl_trace **out, keel_diag *diag)
{
    loader l;
    size_t len = 0;
    memset(&l, 0, sizeof(l));
    l.diag = diag;
    *out = NULL;
    keel__pl_trace *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        return keel__diag(diag, KEEL_ENOMEM, "out of memory");
    }
    l.t = t;
    int rc = read_file(path, &t->buf, &len, diag);
    if (rc < 0) {
        goto out;
    }
    if (len < KEEL__PLREC_MAGIC_BYTES ||
        memcmp(t->buf, KEEL__PLREC_MAGIC, KEEL__PLREC_MAGIC_BYTES) != 0) {
        rc =
            keel__diag(diag, KEEL_ECORRUPT, "%s: not a power-loss trace", path);
        goto out;
    }
    /* count, then resolve */
    size_t cap = 0;
    for (size_t off = KEEL__PLREC_MAGIC_BYTES; off < len;) {
        keel__plrec_hdr h;
        if (len - off < KEEL__PLREC_HDR_BYTES) {
            rc = keel__diag(diag, KEEL_ECORRUPT,
                            "%s: record %zu cut short at byte %zu", path, cap,
                            off);
            goto out;
        }
        keel__plrec_decode(t->buf + off, &h);
        uint64_t body = (uint64_t)h.path_len + h.path2_len + h.data_len;
        if (body > len - off - KEEL__PLREC_HDR_BYTES) {
            rc = keel__diag(diag, KEEL_ECORRUPT,
                            "%s: record %zu cut short at byte %zu", path, cap,
                            off);
            goto out;
        }
        off += KEEL__PLREC_HDR_BYTES + (size_t)body;
        cap++;
    }
    t->ops = calloc(cap + 1, sizeof(*t->ops));
    uint32_t root;
    rc = t->ops == NULL ? KEEL_ENOMEM : new_inode(&l, 1, &root);
    if (rc == KEEL_OK) {
        rc = add_name(&l, ".", 1, root);
    }
    if (rc < 0) {
        keel__diag(diag, rc, "out of memory");
        goto out;
    }
    for (size_t off = KEEL__PLREC_MAGIC_BYTES; off < len; t->nops++) {
        keel__plrec_hdr h;
        keel__plrec_decode(t->buf + off, &h);
        const char *p1 = (const char *)t->buf + off + KEEL__PLREC_HDR_BYTES;
        const char *p2 = p1 + h.path_len;
        const uint8_t *data = (const uint8_t *)p2 + h.path2_len;
        rc = resolve(&l, t->nops, &h, p1, p2, data);
        if (rc < 0) {
            goto out;
        }
        off += KEEL__PLREC_HDR_BYTES + h.path_len + h.path2_len +
               (size_t)h.data_len;
    }
    rc = durability(t);
    if (rc < 0) {
        keel__diag(diag, rc, "out of memory");
    }
out:
    for (size_t i = 0; i < l.nnames; i++) {
        free(l.names[i].path);
    }
    free(l.names);
    free(l.handle_ino);
    free(l.handle_dsync);
    if (rc < 0) {
        keel__pl_trace_free(t);
        return rc;
    }
    *out = t;
    return KEEL_OK;
}

void keel__pl_trace_free(keel__pl_trace *t)
{
    if (t != NULL) {
        for (uint32_t i = 0; t->path != NULL && i < t->ninodes; i++) {
            free(t->path[i]);
        }
        free(t->path);
        free(t->buf);
        free(t->ops);
        free(t->is_dir);
        free(t);
    }
}

size_t keel__pl_trace_ops(const keel__pl_trace *t)
{
    return t->nops;
}

void keel__pl_trace_drop_dir_syncs(keel__pl_trace *t)
{
    t->no_dir_sync = 1;
    durability(t);
}

const char *keel__pl_policy_name(int policy)
{
    static const char *names[] = {"durable", "all", "prefix", "subset"};
    return policy >= 0 && policy <= KEEL__PL_SUBSET ? names[policy] : "?";
}

static int unsynced_at(const keel__pl_trace *t, size_t j, size_t c)
{
    const pl_op *op = &t->ops[j];
    return op->kind != K_NONE &&
           (op->durable_at == SIZE_MAX || op->durable_at > c);
}

size_t keel__pl_unsynced(const keel__pl_trace *t, size_t c)
{
    size_t n = 0;
    for (size_t j = 0; j <= c && j < t->nops; j++) {
        n += (size_t)unsynced_at(t, j, c);
    }
    return n;
}

/* ---- building a crash state ----------------------------------------------
 */

typedef struct ent {
    const char *name;
    uint32_t nlen;
    uint32_t ino;
} ent;

typedef struct node {
    uint8_t *buf; /* files */
    size_t len, cap;
    ent *ents; /* directories */
    size_t nents, capents;
} node;

/* The ACK view (run scenario): every name operation, durable data only. */
#define POLICY_ACK_VIEW 100

static int grow(node *n, size_t len)
{
    if (len > n->cap) {
        size_t cap = n->cap ? n->cap : 4096;
        while (cap < len) {
            cap *= 2;
        }
        uint8_t *nb = realloc(n->buf, cap);
        if (nb == NULL) {
            return KEEL_ENOMEM;
        }
        n->buf = nb;
        n->cap = cap;
    }
    if (len > n->len) {
        memset(n->buf + n->len, 0, len - n->len);
    }
    return KEEL_OK;
}

static ent *lookup(node *d, const char *name, uint32_t nlen)
{
    for (size_t i = 0; i < d->nents; i++) {
        if (d->ents[i].nlen == nlen &&
            memcmp(d->ents[i].name, name, nlen) == 0) {
            return &d->ents[i];
        }
    }
    return NULL;
}

static int link_name(node *d, const char *name, uint32_t nlen, uint32_t ino)
{
    ent *e = lookup(d, name, nlen);
    if (e != NULL) {
        e->ino = ino;
        return KEEL_OK;
    }
    if (d->nents == d->capents) {
        size_t cap = d->capents ? d->capents * 2 : 8;
        ent *ne = realloc(d->ents, cap * sizeof(*ne));
        if (ne == NULL) {
            return KEEL_ENOMEM;
        }
        d->ents = ne;
        d->capents = cap;
    }
    d->ents[d->nents++] = (ent){name, nlen, ino};
    return KEEL_OK;
}

static void unlink_name(node *d, const char *name, uint32_t nlen)
{
    ent *e = lookup(d, name, nlen);
    if (e != NULL) {
        *e = d->ents[--d->nents];
    }
}

/* PL2: apply op (bytes: how many of a write's, for a torn one). */
static int apply(node *nodes, const pl_op *op, uint64_t bytes)
{
    node *n = &nodes[op->ino];
    ent *e;
    switch (op->op) {
    case KEEL__PLREC_WRITE:
        if (bytes > 0) {
            size_t end = (size_t)(op->off + bytes);
            if (grow(n, end) < 0) {
                return KEEL_ENOMEM;
            }
            memcpy(n->buf + op->off, op->data, (size_t)bytes);
            n->len = end > n->len ? end : n->len;
        }
        return KEEL_OK;
    case KEEL__PLREC_TRUNCATE:
        if (grow(n, (size_t)op->off) < 0) {
            return KEEL_ENOMEM;
        }
        n->len = (size_t)op->off;
        return KEEL_OK;
    case KEEL__PLREC_OPEN:
    case KEEL__PLREC_MKDIR:
        return link_name(&nodes[op->p1], op->n1, op->n1len, op->ino);
    case KEEL__PLREC_RENAME:
        e = lookup(&nodes[op->p1], op->n1, op->n1len);
        if (e == NULL) {
            return KEEL_OK;
        }
        uint32_t ino = e->ino;
        unlink_name(&nodes[op->p1], op->n1, op->n1len);
        return link_name(&nodes[op->p2], op->n2, op->n2len, ino);
    case KEEL__PLREC_UNLINK:
    case KEEL__PLREC_RMDIR:
        unlink_name(&nodes[op->p1], op->n1, op->n1len);
        return KEEL_OK;
    default:
        return KEEL_OK;
    }
}

static int write_out(const keel__pl_trace *t, node *nodes, uint32_t ino,
                     const char *path, int depth, keel_diag *diag)
{
    if (mkdir(path, 0755) != 0) {
        int rc = keel_translate_errno(errno);
        return keel__diag(diag, rc, "%s: cannot make: %s", path,
                          keel_strerror(rc));
    }
    node *d = &nodes[ino];
    for (size_t i = 0; i < d->nents; i++) {
        char sub[PATH_MAX];
        const ent *e = &d->ents[i];
        snprintf(sub, sizeof(sub), "%s/%.*s", path, (int)e->nlen, e->name);
        int rc = KEEL_OK;
        if (t->is_dir[e->ino]) {
            rc = depth < 32
                     ? write_out(t, nodes, e->ino, sub, depth + 1, diag)
                     : keel__diag(diag, KEEL_ECORRUPT,
                                  "%s: directories nested too deep", sub);
        } else if (e->nlen == 8 && memcmp(e->name, "lock.mdb", 8) == 0) {
            continue; /* LMDB's reader table: recreated on open */
        } else {
            node *f = &nodes[e->ino];
            int fd = open(sub, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
            size_t done = 0;
            while (fd >= 0 && done < f->len) {
                ssize_t w = write(fd, f->buf + done, f->len - done);
                if (w <= 0) {
                    break;
                }
                done += (size_t)w;
            }
            if (fd < 0 || done < f->len) {
                rc = keel_translate_errno(errno);
                keel__diag(diag, rc, "%s: cannot write: %s", sub,
                           keel_strerror(rc));
            }
            if (fd >= 0) {
                close(fd);
            }
        }
        if (rc < 0) {
            return rc;
        }
    }
    return KEEL_OK;
}

int keel__pl_build(const keel__pl_trace *t, size_t c, int policy, uint64_t seed,
                   const char *dir, keel_diag *diag)
{
    node *nodes = calloc(t->ninodes, sizeof(*nodes));
    int rc = KEEL_OK;
    uint64_t rng = seed;
    if (nodes == NULL) {
        return keel__diag(diag, KEEL_ENOMEM, "out of memory");
    }
    if (c >= t->nops) {
        c = t->nops - 1;
    }
    size_t u = keel__pl_unsynced(t, c), seen = 0;
    size_t prefix =
        u >= 2 ? 1 + (size_t)(keel__crashtest_rand(&rng) % (u - 1)) : u;
    for (size_t j = 0; t->nops > 0 && j <= c && rc == KEEL_OK; j++) {
        const pl_op *op = &t->ops[j];
        uint64_t bytes = op->len;
        if (op->kind == K_NONE) {
            continue;
        }
        if (unsynced_at(t, j, c)) { /* PL1: durable ones always */
            int keep = 0;
            switch (policy) {
            case KEEL__PL_ALL:
                keep = 1;
                break;
            case KEEL__PL_PREFIX:
                keep = seen < prefix;
                break;
            case KEEL__PL_SUBSET:
                keep = keel__crashtest_rand(&rng) % 2 == 0;
                if (keep && op->op == KEEL__PLREC_WRITE && op->len > 0 &&
                    keel__crashtest_rand(&rng) % 4 == 0) {
                    bytes = (keel__crashtest_rand(&rng) % (op->len + 1)) /
                            TEAR_BYTES * TEAR_BYTES;
                }
                break;
            case POLICY_ACK_VIEW:
                keep = op->kind == K_DIR;
                break;
            default:
                break;
            }
            seen++;
            if (!keep) {
                continue;
            }
        }
        rc = apply(nodes, op, bytes);
        if (rc < 0) {
            keel__diag(diag, rc, "out of memory");
        }
    }
    if (rc == KEEL_OK) {
        rc = write_out(t, nodes, 0, dir, 0, diag);
    }
    for (uint32_t i = 0; i < t->ninodes; i++) {
        free(nodes[i].buf);
        free(nodes[i].ents);
    }
    free(nodes);
    return rc;
}

/* ---- sessions ---------------------------------------------------------------
 */

const char *keel__pl_scenario_name(int scenario)
{
    return scenario == KEEL__PL_RUN       ? "run"
           : scenario == KEEL__PL_RESTORE ? "restore"
                                          : "?";
}

int keel__pl_scenario_parse(const char *s, int *scenario)
{
    if (strcmp(s, "run") == 0) {
        *scenario = KEEL__PL_RUN;
    } else if (strcmp(s, "restore") == 0) {
        *scenario = KEEL__PL_RESTORE;
    } else {
        return KEEL_EINVAL;
    }
    return KEEL_OK;
}

void keel__pl_options_init(keel__pl_options *o)
{
    memset(o, 0, sizeof(*o));
    o->scenario = KEEL__PL_RUN;
    o->seed = 1;
    o->trials = DEFAULT_TRIALS;
    o->checkpoint_cranks = DEFAULT_CHECKPOINT_CRANKS;
}

typedef struct session {
    keel__pl_options o;
    keel__pl_report *rep;
    char dir[SCRATCH_MAX];      /* scratch */
    char root[SCRATCH_MAX + 8]; /* the traced root */
    char trace[PATH_MAX];       /* its trace */
    char source[PATH_MAX];      /* restore: the original state */
    char snap[PATH_MAX];        /* restore: the snapshot */
    const char *state;          /* the state's name under the root */
    keel__pl_trace *t;
    uint64_t *hash; /* hash[L] for L in [0, last] (0 where unknown) */
    uint64_t last;  /* the reference's last LSN */
    size_t publish; /* restore: the op after which NEWSTATE is published */
} session;

typedef struct plan {
    size_t c;
    int policy;
    uint64_t seed;
} plan;

/* Run argv (env: extra variables, NULL-terminated) with stdout and stderr
 * into out. @return its exit status (0-255), or < 0 (diag). */
static int spawn(const char *const *argv, const char *const *extra,
                 const char *out, keel_diag *diag)
{
    size_t n = 0, ne = 0;
    while (environ[n] != NULL) {
        n++;
    }
    while (extra != NULL && extra[ne] != NULL) {
        ne++;
    }
    char **env = calloc(n + ne + 1, sizeof(*env));
    if (env == NULL) {
        return keel__diag(diag, KEEL_ENOMEM, "out of memory");
    }
    size_t k = 0;
    for (size_t i = 0; i < ne; i++) {
        env[k++] = (char *)extra[i];
    }
    for (size_t i = 0; i < n; i++) {
        int dup = 0;
        for (size_t x = 0; x < ne; x++) {
            size_t kl = strcspn(extra[x], "=");
            dup |= strncmp(environ[i], extra[x], kl + 1) == 0;
        }
        if (!dup) {
            env[k++] = environ[i];
        }
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_APPEND,
                                     0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid;
    int err = posix_spawn(&pid, argv[0], &fa, NULL, (char *const *)argv, env);
    posix_spawn_file_actions_destroy(&fa);
    free(env);
    if (err != 0) {
        int rc = keel_translate_errno(err);
        return keel__diag(diag, rc, "%s: cannot run: %s", argv[0],
                          keel_strerror(rc));
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR) {
            int rc = keel_translate_errno(errno);
            return keel__diag(diag, rc, "waitpid: %s", keel_strerror(rc));
        }
    }
    if (WIFSIGNALED(st)) {
        return keel__diag(diag, KEEL_EIO, "%s %s: killed by signal %d (see %s)",
                          argv[0], argv[1], WTERMSIG(st), out);
    }
    return WEXITSTATUS(st);
}

static int run_ok(const char *const *argv, const char *const *extra,
                  const char *out, keel_diag *diag)
{
    int rc = spawn(argv, extra, out, diag);
    if (rc > 0) {
        char first[256] = "";
        FILE *f = fopen(out, "r");
        if (f != NULL) {
            if (fgets(first, sizeof(first), f) == NULL) {
                first[0] = '\0';
            }
            fclose(f);
        }
        first[strcspn(first, "\n")] = '\0';
        rc = keel__diag(diag, KEEL_EIO, "`keel %s` failed (exit %d): %s",
                        argv[1], rc, first);
    }
    return rc;
}

/* hash[L] from a finished state's log (and its last LSN). */
static int read_hashes(session *s, const char *wal, keel_diag *diag)
{
    keel_wal_reader *r = NULL;
    keel_wal_record rec;
    size_t cap = 1024;
    uint64_t h = 0;
    s->hash = calloc(cap, sizeof(*s->hash));
    s->last = 0;
    int rc = s->hash == NULL ? keel__diag(diag, KEEL_ENOMEM, "out of memory")
                             : keel_wal_reader_open(wal, NULL, 1, &r, diag);
    while (rc >= 0 && (rc = keel_wal_reader_next(r, &rec, diag)) == 1) {
        while (rec.lsn >= cap) {
            uint64_t *nh = realloc(s->hash, 2 * cap * sizeof(*nh));
            if (nh == NULL) {
                rc = keel__diag(diag, KEEL_ENOMEM, "out of memory");
                break;
            }
            memset(nh + cap, 0, cap * sizeof(*nh));
            s->hash = nh;
            cap *= 2;
        }
        if (rc < 0) {
            break;
        }
        int found =
            keel__crashtest_payload_hash(rec.payload.ptr, rec.payload.len, &h);
        if (found < 0) {
            rc = keel__diag(diag, found,
                            "%s: LSN %" PRIu64 ": malformed write-set", wal,
                            rec.lsn);
            break;
        }
        s->hash[rec.lsn] = h;
        s->last = rec.lsn;
    }
    keel_wal_reader_close(r);
    return rc < 0 ? rc : KEEL_OK;
}

/* The last LSN of the log under dir/wal, as far as it reads. */
static uint64_t last_lsn(const char *wal)
{
    keel_wal_reader *r = NULL;
    keel_wal_record rec;
    keel_diag d = {0};
    uint64_t last = 0;
    struct stat st;
    if (stat(wal, &st) != 0 || keel_wal_reader_open(wal, NULL, 1, &r, &d) < 0) {
        return 0;
    }
    while (keel_wal_reader_next(r, &rec, &d) == 1) {
        last = rec.lsn;
    }
    keel_wal_reader_close(r);
    return last;
}

static int traced(session *s, const char *const *argv, keel_diag *diag)
{
    char env_trace[PATH_MAX + 32], env_root[PATH_MAX + 32],
        env_pre[PATH_MAX + 32], out[PATH_MAX];
    snprintf(env_trace, sizeof(env_trace), "%s=%s", KEEL__PLREC_ENV_TRACE,
             s->trace);
    snprintf(env_root, sizeof(env_root), "%s=%s", KEEL__PLREC_ENV_ROOT,
             s->root);
    snprintf(env_pre, sizeof(env_pre), "LD_PRELOAD=%s", s->o.plrec);
    snprintf(out, sizeof(out), "%s/traced.out", s->dir);
    /* A sanitizer runtime wants to come first; the recorder comes first
     * instead, built with the same flags, and calls on into it. */
    char env_asan[1024];
    const char *asan = getenv("ASAN_OPTIONS");
    snprintf(env_asan, sizeof(env_asan),
             "ASAN_OPTIONS=%s%sverify_asan_link_order=0",
             asan != NULL ? asan : "", asan != NULL && asan[0] ? ":" : "");
    const char *extra[] = {env_trace, env_root, env_pre, env_asan, NULL};
    double t0 = keel__crashtest_now_s();
    int rc = run_ok(argv, extra, out, diag);
    s->rep->trace_seconds = keel__crashtest_now_s() - t0;
    return rc;
}

static int prepare_run(session *s, keel_diag *diag)
{
    char state[PATH_MAX], ck[32], wal[PATH_MAX + 8];
    s->state = "state";
    snprintf(state, sizeof(state), "%s/state", s->root);
    snprintf(ck, sizeof(ck), "%" PRIu32, s->o.checkpoint_cranks);
    const char *argv[] = {s->o.keel_bin,
                          "run",
                          state,
                          "--config",
                          s->o.config_path,
                          "--deterministic",
                          "--sync",
                          "full",
                          "--checkpoint-cranks",
                          ck,
                          NULL};
    int rc = traced(s, argv, diag);
    if (rc == KEEL_OK) {
        snprintf(wal, sizeof(wal), "%s/wal", state);
        rc = read_hashes(s, wal, diag);
    }
    return rc;
}

/* The crank a finished state is at (keel status --json). */
static int final_crank(session *s, const char *state, uint64_t *crank,
                       keel_diag *diag)
{
    char out[PATH_MAX];
    snprintf(out, sizeof(out), "%s/status.json", s->dir);
    unlink(out);
    const char *argv[] = {s->o.keel_bin, "status", state, "--json", NULL};
    int rc = run_ok(argv, NULL, out, diag);
    if (rc < 0) {
        return rc;
    }
    json_t *j = json_load_file(out, 0, NULL);
    json_t *c = json_object_get(j, "crank");
    rc = json_is_integer(c)
             ? KEEL_OK
             : keel__diag(diag, KEEL_ECORRUPT,
                          "%s: no crank in keel status --json", out);
    *crank = (uint64_t)json_integer_value(c);
    json_decref(j);
    return rc;
}

static int prepare_restore(session *s, keel_diag *diag)
{
    char probe[PATH_MAX], out[PATH_MAX], ck[32], half[32], news[PATH_MAX],
        wal[PATH_MAX + 8];
    uint64_t crank = 0;
    s->state = "new";
    snprintf(probe, sizeof(probe), "%s/probe", s->dir);
    snprintf(out, sizeof(out), "%s/untraced.out", s->dir);
    snprintf(ck, sizeof(ck), "%" PRIu32, s->o.checkpoint_cranks);
    snprintf(s->source, sizeof(s->source), "%s/orig", s->dir);
    snprintf(s->snap, sizeof(s->snap), "%s/orig.ksnap", s->dir);
    const char *run1[] = {s->o.keel_bin,
                          "run",
                          probe,
                          "--config",
                          s->o.config_path,
                          "--deterministic",
                          "--sync",
                          "full",
                          "--checkpoint-cranks",
                          ck,
                          NULL};
    int rc = run_ok(run1, NULL, out, diag);
    if (rc == KEEL_OK) {
        rc = final_crank(s, probe, &crank, diag);
    }
    if (rc < 0) {
        return rc;
    }
    /* part-way, a snapshot, then on to the end */
    snprintf(half, sizeof(half), "%" PRIu64, crank / 2 > 0 ? crank / 2 : 1);
    const char *run2[] = {s->o.keel_bin,
                          "run",
                          s->source,
                          "--config",
                          s->o.config_path,
                          "--deterministic",
                          "--sync",
                          "full",
                          "--checkpoint-cranks",
                          ck,
                          "--max-cranks",
                          half,
                          NULL};
    const char *create[] = {s->o.keel_bin, "snapshot", "create",
                            s->source,     s->snap,    NULL};
    const char *run3[] = {s->o.keel_bin,         "run",    s->source,
                          "--deterministic",     "--sync", "full",
                          "--checkpoint-cranks", ck,       NULL};
    rc = run_ok(run2, NULL, out, diag);
    if (rc == KEEL_OK) {
        rc = run_ok(create, NULL, out, diag);
    }
    if (rc == KEEL_OK) {
        rc = run_ok(run3, NULL, out, diag);
    }
    if (rc < 0) {
        return rc;
    }
    snprintf(wal, sizeof(wal), "%s/wal", s->source);
    snprintf(news, sizeof(news), "%s/new", s->root);
    const char *restore[] = {s->o.keel_bin, "snapshot", "restore", s->snap,
                             news,          "--wal",    wal,       NULL};
    rc = traced(s, restore, diag);
    if (rc == KEEL_OK) {
        rc = read_hashes(s, wal, diag);
    }
    return rc;
}

/* restore: the directory sync of the root after the rename to NEWSTATE. */
static size_t find_publish(const keel__pl_trace *t)
{
    size_t renamed = SIZE_MAX;
    for (size_t j = 0; j < t->nops; j++) {
        const pl_op *op = &t->ops[j];
        if (op->op == KEEL__PLREC_RENAME && op->p2 == 0 && op->n2len == 3 &&
            memcmp(op->n2, "new", 3) == 0) {
            renamed = j;
        } else if (renamed != SIZE_MAX && op->is_sync && op->dir_sync &&
                   op->ino == 0) {
            return j;
        }
    }
    return SIZE_MAX;
}

/* The trials (PW4): the end of the trace first, then crash points whose
 * unsynced operations include a name, then the others evenly; then, if
 * the count allows, more subsets of each. */
static int make_plans(session *s, plan **out, size_t *nout, keel_diag *diag)
{
    const keel__pl_trace *t = s->t;
    size_t n = t->nops;
    uint64_t budget = s->o.trials;
    uint8_t *is_point = calloc(n + 1, 1);
    size_t *pts = calloc(n + 1, sizeof(*pts));
    plan *p = calloc(budget + 1, sizeof(*p));
    size_t np = 0, npts = 0;
    uint64_t rng = s->o.seed;
    if (is_point == NULL || pts == NULL || p == NULL || n == 0) {
        free(is_point);
        free(pts);
        free(p);
        return keel__diag(diag, n == 0 ? KEEL_EINVAL : KEEL_ENOMEM,
                          n == 0 ? "the trace is empty" : "out of memory");
    }
    for (size_t j = 1; j < n; j++) {
        const pl_op *op = &t->ops[j];
        if (op->is_sync || (op->kind == K_DATA && op->durable_at == j)) {
            is_point[j - 1] = 1;
        }
    }
    is_point[n - 1] = 1;
    for (size_t j = 0; j < n; j++) {
        if (is_point[j]) {
            s->rep->syncs++;
        }
    }
    /* ordered: end, then with a name unsynced, then the rest */
    pts[npts++] = n - 1;
    size_t named_from = npts;
    for (size_t c = 0; c + 1 < n; c++) {
        int named = 0;
        if (!is_point[c]) {
            continue;
        }
        for (size_t j = 0; j <= c && !named; j++) {
            named = unsynced_at(t, j, c) && t->ops[j].kind == K_DIR;
        }
        if (named) {
            pts[npts++] = c;
            is_point[c] = 2;
        }
    }
    size_t named_to = npts;
    size_t nrest = 0;
    for (size_t c = 0; c + 1 < n; c++) {
        nrest += is_point[c] == 1;
    }
    /* each point takes up to 4 trials: spread the rest over what is left */
    uint64_t used = 4 + END_SUBSETS + 4 * (named_to - named_from);
    uint64_t left = budget > used ? (budget - used) / 4 : 0;
    uint64_t stride = left > 0 && nrest > left ? nrest / left : 1;
    size_t seen = 0;
    for (size_t c = 0; c + 1 < n; c++) {
        if (is_point[c] == 1 && seen++ % stride == 0) {
            pts[npts++] = c;
        }
    }
    for (size_t i = 0; i < npts && np < budget; i++) {
        size_t c = pts[i];
        size_t u = keel__pl_unsynced(t, c);
        int pol[4 + END_SUBSETS];
        size_t k = 0;
        pol[k++] = KEEL__PL_DURABLE;
        if (u > 0) {
            pol[k++] = KEEL__PL_ALL;
            pol[k++] = KEEL__PL_SUBSET;
        }
        if (u > 1) {
            pol[k++] = KEEL__PL_PREFIX;
        }
        for (size_t x = 0; i == 0 && u > 0 && x < END_SUBSETS; x++) {
            pol[k++] = KEEL__PL_SUBSET;
        }
        for (size_t x = 0; x < k && np < budget; x++) {
            p[np++] = (plan){c, pol[x], keel__crashtest_rand(&rng)};
        }
        s->rep->crash_points++;
    }
    /* budget left (a short trace): more subsets, point by point */
    size_t tried = (size_t)s->rep->crash_points;
    for (size_t round = 0; round < MAX_EXTRA_SUBSETS && np < budget; round++) {
        size_t added = 0;
        for (size_t i = 0; i < tried && np < budget; i++) {
            if (keel__pl_unsynced(t, pts[i]) > 0) {
                p[np++] =
                    (plan){pts[i], KEEL__PL_SUBSET, keel__crashtest_rand(&rng)};
                added++;
            }
        }
        if (added == 0) {
            break;
        }
    }
    free(is_point);
    free(pts);
    *out = p;
    *nout = np;
    return KEEL_OK;
}

/* What was not durable at c, by file: "3 writes data.mdb, ...". */
static void describe_unsynced(const keel__pl_trace *t, size_t c, char *buf,
                              size_t cap)
{
    static const char *what[KEEL__PLREC_NOPS] = {
        [KEEL__PLREC_OPEN] = "create",       [KEEL__PLREC_WRITE] = "write",
        [KEEL__PLREC_TRUNCATE] = "truncate", [KEEL__PLREC_RENAME] = "rename",
        [KEEL__PLREC_UNLINK] = "unlink",     [KEEL__PLREC_MKDIR] = "mkdir",
        [KEEL__PLREC_RMDIR] = "rmdir"};
    size_t used = 0;
    buf[0] = '\0';
    for (size_t j = 0; j <= c && j < t->nops && used + 1 < cap; j++) {
        const pl_op *op = &t->ops[j];
        if (!unsynced_at(t, j, c)) {
            continue;
        }
        /* a run of the same op on the same file counts once */
        size_t n = 1;
        while (j + 1 <= c && j + 1 < t->nops && unsynced_at(t, j + 1, c) &&
               t->ops[j + 1].op == op->op && t->ops[j + 1].ino == op->ino) {
            j++;
            n++;
        }
        const char *name = t->path[op->ino] != NULL ? t->path[op->ino] : "?";
        int k = snprintf(
            buf + used, cap - used, "%s%zu %s%s %s", used > 0 ? ", " : "", n,
            what[op->op] != NULL ? what[op->op] : "op", n > 1 ? "s" : "", name);
        if (k < 0 || (size_t)k >= cap - used) {
            memcpy(buf + cap - 4, "...", 4);
            break;
        }
        used += (size_t)k;
    }
}

static void violation(session *s, uint64_t trial, const plan *p,
                      const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void violation(session *s, uint64_t trial, const plan *p,
                      const char *fmt, ...)
{
    char what[1024], repro[512], msg[512], uns[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    describe_unsynced(s->t, p->c, uns, sizeof(uns));
    snprintf(what, sizeof(what),
             "%s: crash after operation %zu of %zu (unsynced: %s), %s state: "
             "%s",
             keel__pl_scenario_name(s->o.scenario), p->c + 1, s->t->nops,
             uns[0] != '\0' ? uns : "none", keel__pl_policy_name(p->policy),
             msg);
    snprintf(repro, sizeof(repro),
             "keel crashtest --mode powerloss --scenario %s --config %s "
             "--seed %" PRIu64 " --trials %" PRIu64 " --trial %" PRIu64,
             keel__pl_scenario_name(s->o.scenario), s->o.config_path, s->o.seed,
             s->o.trials, trial);
    if (s->o.keep_failed) {
        char kept[PATH_MAX + 32], t[PATH_MAX + 8];
        snprintf(t, sizeof(t), "%s/t", s->dir);
        snprintf(kept, sizeof(kept), "%s/failed-%" PRIu64, s->dir, trial);
        if (rename(t, kept) == 0) {
            size_t used = strlen(what);
            snprintf(what + used, sizeof(what) - used, " (kept in %.200s)",
                     kept);
        }
    }
    if (s->rep->violations++ == 0) {
        snprintf(s->rep->first, sizeof(s->rep->first), "%s", what);
        snprintf(s->rep->repro, sizeof(s->rep->repro), "%s", repro);
    }
    if (s->o.violation != NULL) {
        s->o.violation(s->o.violation_arg, trial, what, repro);
    }
}

/* The LSN acknowledged at crash point c (PL4). */
static int acked(session *s, size_t c, uint64_t *ack, keel_diag *diag)
{
    char dir[PATH_MAX + 8], wal[PATH_MAX + 16];
    if (s->o.scenario == KEEL__PL_RESTORE) {
        *ack = s->publish != SIZE_MAX && c >= s->publish ? s->last : 0;
        return KEEL_OK;
    }
    snprintf(dir, sizeof(dir), "%s/a", s->dir);
    int rc = keel__crashtest_rmtree(dir);
    if (rc == KEEL_OK) {
        rc = keel__pl_build(s->t, c, POLICY_ACK_VIEW, 0, dir, diag);
    }
    snprintf(wal, sizeof(wal), "%s/%s/wal", dir, s->state);
    *ack = rc == KEEL_OK ? last_lsn(wal) : 0;
    return rc;
}

/* What the check of one crash state found (sent from its child). */
typedef struct check_out {
    int violated;
    uint8_t recovered, audited;
    char what[512];
} check_out;

static void fail(check_out *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void fail(check_out *c, const char *fmt, ...)
{
    va_list ap;
    if (c->violated++ > 0) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(c->what, sizeof(c->what), fmt, ap);
    va_end(ap);
}

/* PL4, in a child: LMDB maps data.mdb, and a meta page that names a page
 * past the end of a short file is a SIGBUS, which must be a finding, not
 * the end of the session. */
static void check_state(const session *s, const char *state, uint64_t ack,
                        check_out *c)
{
    keel_kernel_options ko;
    keel_kernel *k = NULL;
    keel_kernel_recovery info;
    keel_diag d = {0};
    keel_kernel_options_init(&ko);
    ko.sync = KEEL_SYNC_FULL;
    ko.deterministic = 1;
    ko.create = s->o.scenario == KEEL__PL_RUN; /* as keel run would */
    int rc = keel_kernel_open(state, &ko, &k, &d);
    if (rc < 0) {
        fail(c, "opening it failed: %s: %s", keel_err_name(rc), d.msg);
        return;
    }
    keel_kernel_recovery_info(k, &info);
    uint64_t lsn = info.wal_last_lsn;
    uint64_t h = keel_kernel_activity_hash(k);
    if (lsn < ack) {
        fail(c,
             "LSN %" PRIu64 " had been acknowledged, the recovered log ends "
             "at LSN %" PRIu64,
             ack, lsn);
    } else if (lsn > s->last) {
        fail(c,
             "the recovered log ends at LSN %" PRIu64
             ", past the reference's last, %" PRIu64,
             lsn, s->last);
    } else if (h != s->hash[lsn]) {
        fail(c,
             "recovered at LSN %" PRIu64 " with activity hash %016" PRIx64
             ", the reference's after LSN %" PRIu64 " is %016" PRIx64,
             lsn, h, lsn, s->hash[lsn]);
    }
    rc = keel_kernel_close(k, &d);
    if (rc < 0) {
        fail(c, "closing it failed: %s: %s", keel_err_name(rc), d.msg);
    }
    if (c->violated) {
        return;
    }
    c->recovered = 1;
    keel_audit_options ao;
    keel_audit_report ar;
    keel_audit_options_init(&ao);
    if (s->o.scenario == KEEL__PL_RESTORE) {
        ao.base_snapshot = s->snap;
    }
    rc = keel_audit(state, &ao, &ar, &d);
    if (rc < 0) {
        fail(c, "the audit could not run: %s: %s", keel_err_name(rc), d.msg);
    } else if (ar.violations > 0) {
        fail(c, "the audit failed at LSN %" PRIu64 " (crank %" PRIu64 "): %s",
             ar.violation_lsn, ar.violation_crank, ar.violation);
    } else {
        c->audited = 1;
    }
}

static int check_in_child(const session *s, const char *state, uint64_t ack,
                          check_out *c, keel_diag *diag)
{
    int fds[2];
    memset(c, 0, sizeof(*c));
    fflush(NULL);
    if (pipe(fds) != 0) {
        int rc = keel_translate_errno(errno);
        return keel__diag(diag, rc, "pipe: %s", keel_strerror(rc));
    }
    pid_t pid = fork();
    if (pid < 0) {
        int rc = keel_translate_errno(errno);
        close(fds[0]);
        close(fds[1]);
        return keel__diag(diag, rc, "fork: %s", keel_strerror(rc));
    }
    if (pid == 0) {
        close(fds[0]);
        check_state(s, state, ack, c);
        const char *b = (const char *)c;
        size_t done = 0;
        while (done < sizeof(*c)) {
            ssize_t w = write(fds[1], b + done, sizeof(*c) - done);
            if (w <= 0) {
                _exit(3);
            }
            done += (size_t)w;
        }
        _exit(0);
    }
    close(fds[1]);
    size_t got = 0;
    while (got < sizeof(*c)) {
        ssize_t r = read(fds[0], (char *)c + got, sizeof(*c) - got);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            break;
        }
        got += (size_t)r;
    }
    close(fds[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (got < sizeof(*c)) {
        memset(c, 0, sizeof(*c));
        if (WIFSIGNALED(st)) {
            fail(c, "opening and checking it killed keel with signal %d (%s)",
                 WTERMSIG(st), strsignal(WTERMSIG(st)));
        } else {
            fail(c, "the check's child exited with status %d and no result",
                 WEXITSTATUS(st));
        }
    }
    return KEEL_OK;
}

static int trial(session *s, uint64_t n, const plan *p, keel_diag *diag)
{
    char dir[PATH_MAX + 8], state[PATH_MAX + 16];
    uint64_t ack = 0;
    struct stat st;
    check_out c;
    s->rep->trials++;
    snprintf(dir, sizeof(dir), "%s/t", s->dir);
    snprintf(state, sizeof(state), "%s/%s", dir, s->state);
    int rc = keel__crashtest_rmtree(dir);
    if (rc == KEEL_OK) {
        rc = keel__pl_build(s->t, p->c, p->policy, p->seed, dir, diag);
    }
    if (rc == KEEL_OK) {
        rc = acked(s, p->c, &ack, diag);
    }
    if (rc < 0) {
        return rc;
    }
    s->rep->acked += ack > 0;
    if (stat(state, &st) != 0) {
        if (ack > 0) {
            violation(s, n, p,
                      "%s is gone, LSN %" PRIu64 " had been acknowledged",
                      s->state, ack);
        } else {
            s->rep->absent++;
        }
        return KEEL_OK;
    }
    rc = check_in_child(s, state, ack, &c, diag);
    if (rc < 0) {
        return rc;
    }
    s->rep->recovered += c.recovered;
    s->rep->audits += c.audited;
    if (c.violated) {
        violation(s, n, p, "%s", c.what);
    }
    return KEEL_OK;
}

int keel__pl_run(const keel__pl_options *o, keel__pl_report *rep,
                 keel_diag *diag)
{
    session s;
    plan *plans = NULL;
    size_t nplans = 0;
    double t0 = keel__crashtest_now_s();
    memset(&s, 0, sizeof(s));
    memset(rep, 0, sizeof(*rep));
    s.o = *o;
    s.rep = rep;
    if (s.o.scenario == 0) {
        s.o.scenario = KEEL__PL_RUN;
    }
    if (s.o.trials == 0) {
        s.o.trials = DEFAULT_TRIALS;
    }
    if (s.o.checkpoint_cranks == 0) {
        s.o.checkpoint_cranks = DEFAULT_CHECKPOINT_CRANKS;
    }
    rep->scenario = s.o.scenario;
    if (o->config_path == NULL || o->keel_bin == NULL || o->plrec == NULL) {
        return keel__diag(diag, KEEL_EINVAL,
                          "powerloss needs a config, the keel program and "
                          "the recorder (libkeel_plrec.so)");
    }
    if (access(o->plrec, R_OK) != 0) {
        return keel__diag(diag, KEEL_EINVAL, "%s: cannot read the recorder: %s",
                          o->plrec, strerror(errno));
    }
    const char *work =
        o->work_dir != NULL ? o->work_dir : keel__crashtest_default_work_dir();
    char tmpl[PATH_MAX];
    snprintf(tmpl, sizeof(tmpl), "%s/keel-powerloss-XXXXXX", work);
    char real[PATH_MAX];
    if (strlen(work) > 1024 || mkdtemp(tmpl) == NULL ||
        realpath(tmpl, real) == NULL || strlen(real) >= SCRATCH_MAX) {
        return keel__diag(diag, keel_translate_errno(errno),
                          "%s: cannot make a scratch directory: %s", tmpl,
                          strerror(errno));
    }
    memcpy(s.dir, real, strlen(real) + 1);
    snprintf(s.root, sizeof(s.root), "%s/root", s.dir);
    snprintf(s.trace, sizeof(s.trace), "%s/trace", s.dir);
    int rc = mkdir(s.root, 0755) == 0
                 ? KEEL_OK
                 : keel__diag(diag, keel_translate_errno(errno),
                              "%s: cannot make: %s", s.root, strerror(errno));
    if (rc == KEEL_OK) {
        rc = s.o.scenario == KEEL__PL_RESTORE ? prepare_restore(&s, diag)
                                              : prepare_run(&s, diag);
    }
    if (rc == KEEL_OK) {
        rc = keel__pl_trace_load(s.trace, &s.t, diag);
    }
    if (rc < 0) {
        goto out;
    }
    if (s.o.drop_dir_syncs) {
        keel__pl_trace_drop_dir_syncs(s.t);
    }
    rep->ops = s.t->nops;
    rep->transactions = s.last;
    s.publish = find_publish(s.t);
    if (s.o.scenario == KEEL__PL_RESTORE && s.publish == SIZE_MAX) {
        rc = keel__diag(diag, KEEL_EINVAL,
                        "the restore's trace has no directory sync after the "
                        "rename that publishes NEWSTATE");
        goto out;
    }
    rc = make_plans(&s, &plans, &nplans, diag);
    if (rc < 0) {
        goto out;
    }
    if (o->only_trial > nplans) {
        rc = keel__diag(diag, KEEL_EINVAL,
                        "--trial %" PRIu64 ": the session has %zu trials",
                        o->only_trial, nplans);
        goto out;
    }
    for (size_t i = 0; i < nplans && rc == KEEL_OK; i++) {
        if (o->only_trial == 0 || o->only_trial == i + 1) {
            rc = trial(&s, i + 1, &plans[i], diag);
        }
    }
out:
    free(plans);
    free(s.hash);
    keel__pl_trace_free(s.t);
    if (s.dir[0] != '\0') {
        /* keep the failed trials' states, and everything if it failed */
        if (rc == KEEL_OK) {
            DIR *d = opendir(s.dir);
            struct dirent *e;
            int kept = 0;
            while (d != NULL && (e = readdir(d)) != NULL) {
                char p[PATH_MAX + 256];
                if (strncmp(e->d_name, "failed-", 7) == 0) {
                    kept = 1;
                    continue;
                }
                if (strcmp(e->d_name, ".") == 0 ||
                    strcmp(e->d_name, "..") == 0) {
                    continue;
                }
                snprintf(p, sizeof(p), "%s/%s", s.dir, e->d_name);
                keel__crashtest_rmtree(p);
            }
            if (d != NULL) {
                closedir(d);
            }
            if (!kept) {
                rmdir(s.dir);
            }
        }
    }
    rep->seconds = keel__crashtest_now_s() - t0;
    return rc;
}
