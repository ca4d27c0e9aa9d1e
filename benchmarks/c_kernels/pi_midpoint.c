/* The C twin of pytest_hpcdemo.workloads.pi_midpoint: the midpoint rule for pi with n intervals,
 * the same operations in the same order. Built by benchmarks/test_numba.py with the system
 * compiler at -O2 (-ffp-contract=off: no fused multiply-add, which Numba does not emit either).
 */
double pi_midpoint(long long n)
{
    double h = 1.0 / (double)n;
    double total = 0.0;
    for (long long i = 0; i < n; i++) {
        double x = ((double)i + 0.5) * h;
        total += 4.0 / (1.0 + x * x);
    }
    return total * h;
}
