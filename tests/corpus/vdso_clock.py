t0 = time.clock_gettime(time.CLOCK_MONOTONIC); w0 = time.time()
def check():
    t1 = time.clock_gettime(time.CLOCK_MONOTONIC)
    return (t1 >= t0 and time.time() >= w0) or "clock went back: %f < %f" % (t1, t0)
serve(check)
