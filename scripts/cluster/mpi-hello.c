/* mpi-hello: prints rank, size, host name and network namespace of each
 * rank, then does MPI_Allreduce(SUM) of rank+1 and checks the result.
 *
 *   mpi-hello            one allreduce, then exit 0 (1 on a wrong sum)
 *   mpi-hello --loop S   allreduce repeatedly for S seconds (S<=0: forever),
 *                        printing a heartbeat line from rank 0 each second;
 *                        used by netns-cut tests to have traffic in flight.
 *   mpi-hello --loop S --chatty
 *                        as --loop, and every rank but 0 also prints a "chatty" line
 *                        every 100 ms from a second thread, even while blocked in MPI,
 *                        so the orted->mpirun (OOB) connection always has data in flight.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>
#include <pthread.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int chatty_rank;
static void *chatty(void *arg) {
    (void)arg;
    for (long i = 0;; i++) {
        printf("chatty rank %d line %ld\n", chatty_rank, i);
        fflush(stdout);
        usleep(100000);
    }
    return NULL;
}

int main(int argc, char **argv) {
    int loop = 0, loud = 0;
    double loop_s = 0;
    if (argc >= 3 && strcmp(argv[1], "--loop") == 0) { loop = 1; loop_s = atof(argv[2]); }
    if (argc >= 4 && strcmp(argv[3], "--chatty") == 0) loud = 1;

    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);

    char host[256] = "?", ns[256] = "?";
    gethostname(host, sizeof host);
    ssize_t n = readlink("/proc/self/ns/net", ns, sizeof ns - 1);
    if (n > 0) ns[n] = 0;

    long mine = rank + 1, sum = 0, want = (long)size * (size + 1) / 2;
    MPI_Allreduce(&mine, &sum, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    printf("rank %d/%d host %s netns %s allreduce %ld (%s)\n", rank, size, host,
           ns, sum, sum == want ? "ok" : "WRONG");
    fflush(stdout);
    int bad = sum != want;

    if (loop && loud && rank != 0) {
        pthread_t t;
        chatty_rank = rank;
        pthread_create(&t, NULL, chatty, NULL);
    }
    if (loop) {
        /* 1 MiB buffers so a cut link leaves unacknowledged data in flight. */
        enum { N = 1 << 17 };
        double *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
        for (int i = 0; i < N; i++) a[i] = rank;
        double t0 = now(), last = t0;
        long iters = 0;
        for (;;) {
            /* stop collectively: rank 0's clock decides, so no rank is left waiting */
            int stop = rank == 0 && loop_s > 0 && now() - t0 >= loop_s;
            MPI_Bcast(&stop, 1, MPI_INT, 0, MPI_COMM_WORLD);
            if (stop) break;
            MPI_Allreduce(a, b, N, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
            iters++;
            if (rank == 0 && now() - last >= 1.0) {
                last = now();
                printf("heartbeat t=%.1f iters=%ld\n", last - t0, iters);
                fflush(stdout);
            }
        }
        free(a);
        free(b);
    }
    MPI_Finalize();
    return bad;
}
