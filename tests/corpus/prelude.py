# Prelude of every Python corpus program (tests/corpus.rs). The program sets
# up one kernel object in the scratch directory D, prints "ready", and after
# the restore (cns kill NAME USR1) runs check(): "check-ok", or
# "check-fail: why". check() returns None/True for success, else the reason.
import os, sys, signal, time, socket, struct, errno, fcntl, mmap, hashlib

D = sys.argv[1]
_go = False


def _usr1(s, f):
    global _go
    _go = True


signal.signal(signal.SIGUSR1, _usr1)


def serve(check):
    print("ready", flush=True)
    while not _go:
        time.sleep(0.02)
    try:
        r = check()
        ok = r is None or r is True
        print("check-ok" if ok else "check-fail: %s" % (r,), flush=True)
    except Exception as e:
        print("check-fail: %r" % (e,), flush=True)
    while True:
        time.sleep(1)


def path(name):
    return os.path.join(D, name)
