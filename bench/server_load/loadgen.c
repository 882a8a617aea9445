/*
 * loadgen.c - a small HTTP/1.1 load generator for towerkit-server on loopback.
 *
 *   loadgen [options]
 *     -H ADDR      server address (127.0.0.1)
 *     -p PORT      server port (8080)
 *     -c N         connections, one thread each, keep-alive (1)
 *     -n N         total requests (1000)
 *     -d SECONDS   stop after this long even if -n is not reached (60)
 *     -m METHOD    GET or POST (POST)
 *     -u PATH      request path (/recommend)
 *     -b BODY      request body
 *     -f FILE      request bodies, one per line, used round robin
 *     -e STATUS    the status counted as success (200)
 *     -h HEADER    an extra request header ("Name: value"), repeatable
 *     -1           send one request, print "<status> <body>" and exit 0 if it got an answer
 *     -i           with -1: print the response headers after the body, one "< Name: value" a line
 *     -C LENGTH    with -1: declare this Content-Length whatever the body's size (the body is
 *                  sent, then the client waits for an answer at most -d seconds)
 *     -s N         slow clients: open N connections that send part of a request's headers
 *                  and never finish; hold them -d seconds, then print
 *                  "slow opened N refused R closed_by_server C" (a server that limits
 *                  connections refuses or closes some). Exit 0.
 *
 * Prints one line: "requests N errors E seconds S rps R p50_ms A p99_ms B max_ms C".
 * An error is a status other than -e, a broken connection or a malformed response.
 * Exit status 0 when there were no errors.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *host = "127.0.0.1";
static int port = 8080, conns = 1, expect = 200;
static long total = 1000;
static double duration = 60;
static const char *method = "POST", *path = "/recommend";
static char **bodies;
static int nbodies;
static char extra_headers[2048]; /* "Name: value\r\n" lines (-h) */
static long declared = -1;       /* -C: the Content-Length to declare */
static int show_headers;         /* -i */

static long issued; /* atomic */
static long errors; /* atomic */
static double t_end;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int connect_server(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, host, &a.sin_addr);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* an answer (and a connect) is awaited at most 10 s, or -d seconds when shorter */
    double wait = duration < 10 ? duration : 10;
    if (wait < 0.1) wait = 0.1;
    struct timeval tv = { (time_t)wait, (suseconds_t)((wait - (double)(time_t)wait) * 1e6) };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int send_all(int fd, const char *buf, size_t len) {
    while (len) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n <= 0) return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* One request on fd; returns the status (and the body in *body_out, malloc'd, if asked)
 * or -1 when the connection failed. */
static int request(int fd, const char *body, char **body_out) {
    char head[4096];
    size_t blen = body ? strlen(body) : 0;
    int h = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n%s"
                     "Content-Length: %ld\r\n\r\n",
                     method, path, host, port, extra_headers, declared >= 0 ? declared : (long)blen);
    if (h < 0 || (size_t)h >= sizeof head) return -1;
    if (send_all(fd, head, (size_t)h) != 0 || (blen && send_all(fd, body, blen) != 0)) return -1;
    static __thread char buf[1 << 16];
    size_t got = 0;
    char *end = NULL;
    while (!end) {
        if (got == sizeof buf - 1) return -1;
        ssize_t n = recv(fd, buf + got, sizeof buf - 1 - got, 0);
        if (n <= 0) return -1;
        got += (size_t)n;
        buf[got] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    int status = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1) return -1;
    long clen = -1;
    for (char *p = buf; p < end; p++) {
        if ((p == buf || p[-1] == '\n') && strncasecmp(p, "Content-Length:", 15) == 0) clen = atol(p + 15);
    }
    if (clen < 0) return -1;
    size_t hdr = (size_t)(end + 4 - buf);
    if (hdr + (size_t)clen >= sizeof buf) return -1;
    while (got < hdr + (size_t)clen) {
        ssize_t n = recv(fd, buf + got, sizeof buf - 1 - got, 0);
        if (n <= 0) return -1;
        got += (size_t)n;
    }
    buf[hdr + (size_t)clen] = '\0';
    if (body_out && show_headers) {
        /* the body, then the headers (not the status line) as "< Name: value" lines */
        size_t cap = (size_t)clen + 2 * hdr + 16;
        char *o = malloc(cap);
        if (!o) return -1;
        size_t n = (size_t)snprintf(o, cap, "%s", buf + hdr);
        char *line = strstr(buf, "\r\n");
        while (line && line + 2 < end) {
            char *next = strstr(line + 2, "\r\n");
            n += (size_t)snprintf(o + n, cap - n, "< %.*s\n", (int)(next - line - 2), line + 2);
            line = next;
        }
        *body_out = o;
    } else if (body_out) {
        *body_out = strdup(buf + hdr);
    }
    return status;
}

typedef struct thread_state {
    double *lat;
    long n, cap;
} thread_state;

static void *run(void *arg) {
    thread_state *ts = arg;
    int fd = connect_server();
    for (;;) {
        long i = __atomic_fetch_add(&issued, 1, __ATOMIC_RELAXED);
        if (i >= total || now() > t_end) break;
        if (fd < 0 && (fd = connect_server()) < 0) {
            __atomic_add_fetch(&errors, 1, __ATOMIC_RELAXED);
            usleep(1000);
            continue;
        }
        double t0 = now();
        int st = request(fd, nbodies ? bodies[i % nbodies] : NULL, NULL);
        double dt = now() - t0;
        if (st != expect) __atomic_add_fetch(&errors, 1, __ATOMIC_RELAXED);
        if (st < 0) {
            close(fd);
            fd = -1;
        }
        if (ts->n == ts->cap) {
            ts->cap = ts->cap ? ts->cap * 2 : 4096;
            ts->lat = realloc(ts->lat, (size_t)ts->cap * sizeof *ts->lat);
        }
        ts->lat[ts->n++] = dt;
    }
    if (fd >= 0) close(fd);
    return NULL;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void read_bodies(const char *file) {
    FILE *f = fopen(file, "r");
    if (!f) {
        perror(file);
        exit(2);
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        if (!n) continue;
        bodies = realloc(bodies, (size_t)(nbodies + 1) * sizeof *bodies);
        bodies[nbodies++] = strdup(line);
    }
    free(line);
    fclose(f);
}

/* -s: n connections that send an unfinished request head and hold it for `duration`
 * seconds (a slow-loris client). A refused connect or one the server closes is counted;
 * the server is expected to stay available to others meanwhile. */
static int slow_clients(int n) {
    int *fds = calloc((size_t)n, sizeof *fds);
    int opened = 0, refused = 0, closed = 0;
    const char *part = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
    for (int i = 0; i < n; i++) {
        fds[i] = connect_server();
        if (fds[i] < 0 || send_all(fds[i], part, strlen(part)) != 0) {
            if (fds[i] >= 0) close(fds[i]);
            fds[i] = -1;
            refused++;
        } else {
            opened++;
        }
    }
    double end = now() + duration;
    while (now() < end) usleep(50000);
    char c;
    for (int i = 0; i < n; i++) {
        if (fds[i] < 0) continue;
        /* a closed connection reads 0 (or fails); an open one has nothing to read */
        ssize_t r = recv(fds[i], &c, 1, MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) closed++;
        close(fds[i]);
    }
    free(fds);
    printf("slow opened %d refused %d closed_by_server %d\n", opened, refused, closed);
    return 0;
}

int main(int argc, char **argv) {
    int once = 0, slow = 0, opt;
    while ((opt = getopt(argc, argv, "H:p:c:n:d:m:u:b:f:e:h:C:s:i1")) != -1) {
        switch (opt) {
        case 'H':
            host = optarg;
            break;
        case 'p':
            port = atoi(optarg);
            break;
        case 'c':
            conns = atoi(optarg);
            break;
        case 'n':
            total = atol(optarg);
            break;
        case 'd':
            duration = atof(optarg);
            break;
        case 'm':
            method = optarg;
            break;
        case 'u':
            path = optarg;
            break;
        case 'b':
            bodies = realloc(bodies, (size_t)(nbodies + 1) * sizeof *bodies);
            bodies[nbodies++] = strdup(optarg);
            break;
        case 'f':
            read_bodies(optarg);
            break;
        case 'e':
            expect = atoi(optarg);
            break;
        case '1':
            once = 1;
            break;
        case 'i':
            show_headers = 1;
            break;
        case 'C':
            declared = atol(optarg);
            break;
        case 's':
            slow = atoi(optarg);
            break;
        case 'h': {
            size_t used = strlen(extra_headers);
            snprintf(extra_headers + used, sizeof extra_headers - used, "%s\r\n", optarg);
            break;
        }
        default:
            fprintf(stderr,
                    "usage: %s [-H addr] [-p port] [-c conns] [-n requests] [-d seconds] [-m method] "
                    "[-u path] [-b body | -f file] [-e status] [-h header] [-1 [-i] [-C length]] [-s n]\n",
                    argv[0]);
            return 2;
        }
    }
    if (slow > 0) return slow_clients(slow);
    if (once) {
        int fd = connect_server();
        char *body = NULL;
        int st = fd >= 0 ? request(fd, nbodies ? bodies[0] : NULL, &body) : -1;
        if (fd >= 0) close(fd);
        printf("%d %s", st, body ? body : "\n");
        free(body);
        return st > 0 ? 0 : 1;
    }
    if (conns < 1) conns = 1;
    pthread_t *th = calloc((size_t)conns, sizeof *th);
    thread_state *ts = calloc((size_t)conns, sizeof *ts);
    double t0 = now();
    t_end = t0 + duration;
    for (int i = 0; i < conns; i++) pthread_create(&th[i], NULL, run, &ts[i]);
    for (int i = 0; i < conns; i++) pthread_join(th[i], NULL);
    double secs = now() - t0;
    long n = 0;
    for (int i = 0; i < conns; i++) n += ts[i].n;
    double *all = malloc((size_t)(n ? n : 1) * sizeof *all);
    long k = 0;
    for (int i = 0; i < conns; i++) {
        memcpy(all + k, ts[i].lat, (size_t)ts[i].n * sizeof *all);
        k += ts[i].n;
        free(ts[i].lat);
    }
    qsort(all, (size_t)n, sizeof *all, cmp_d);
    double p50 = n ? all[(long)(0.50 * (double)(n - 1))] : 0, p99 = n ? all[(long)(0.99 * (double)(n - 1))] : 0;
    double mx = n ? all[n - 1] : 0;
    printf("requests %ld errors %ld seconds %.3f rps %.1f p50_ms %.3f p99_ms %.3f max_ms %.3f\n", n, errors, secs,
           (double)n / secs, p50 * 1e3, p99 * 1e3, mx * 1e3);
    free(all);
    free(th);
    free(ts);
    for (int i = 0; i < nbodies; i++) free(bodies[i]);
    free(bodies);
    return errors ? 1 : 0;
}
