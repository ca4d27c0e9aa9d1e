/* The C side of the mpi4py chapter's limit: OSU-style ping-pong and windowed bandwidth loops.
 *
 * Built at test time with the MPI's own mpicc as a shared library and called through ctypes from
 * the pytest ranks, on a communicator handed over as its Fortran handle: the same job, the same MPI
 * library, the same thread level (mpi4py's) and the same ranks as the Python loops it is compared to.
 * Ranks 0 and 1 of the communicator take part; the others return at once.
 */
#include <mpi.h>

#define MAX_WINDOW 64

/* `reps` round trips of `nbytes` between ranks 0 and 1 (one-way latency = time / (2 reps)). */
int hpcdemo_pingpong(MPI_Fint fcomm, char *buf, int nbytes, int reps)
{
    MPI_Comm comm = MPI_Comm_f2c(fcomm);
    int rank;
    MPI_Comm_rank(comm, &rank);
    for (int i = 0; i < reps; i++) {
        if (rank == 0) {
            MPI_Send(buf, nbytes, MPI_BYTE, 1, 1, comm);
            MPI_Recv(buf, nbytes, MPI_BYTE, 1, 1, comm, MPI_STATUS_IGNORE);
        } else if (rank == 1) {
            MPI_Recv(buf, nbytes, MPI_BYTE, 0, 1, comm, MPI_STATUS_IGNORE);
            MPI_Send(buf, nbytes, MPI_BYTE, 0, 1, comm);
        }
    }
    return 0;
}

/* One window: rank 0 posts `window` non-blocking sends of `nbytes`, rank 1 as many receives, then
 * rank 1 acknowledges with one byte (bandwidth = window * nbytes / time). */
int hpcdemo_window(MPI_Fint fcomm, char *buf, int nbytes, int window)
{
    MPI_Comm comm = MPI_Comm_f2c(fcomm);
    MPI_Request reqs[MAX_WINDOW];
    char ack = 0;
    int rank;
    if (window < 1 || window > MAX_WINDOW)
        return -1;
    MPI_Comm_rank(comm, &rank);
    if (rank == 0) {
        for (int i = 0; i < window; i++)
            MPI_Isend(buf, nbytes, MPI_BYTE, 1, 2, comm, &reqs[i]);
        MPI_Waitall(window, reqs, MPI_STATUSES_IGNORE);
        MPI_Recv(&ack, 1, MPI_BYTE, 1, 3, comm, MPI_STATUS_IGNORE);
    } else if (rank == 1) {
        for (int i = 0; i < window; i++)
            MPI_Irecv(buf, nbytes, MPI_BYTE, 0, 2, comm, &reqs[i]);
        MPI_Waitall(window, reqs, MPI_STATUSES_IGNORE);
        MPI_Send(&ack, 1, MPI_BYTE, 0, 3, comm);
    }
    return 0;
}
