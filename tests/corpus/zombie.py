pid = os.fork()
if pid == 0:
    os._exit(42)
time.sleep(0.2)
serve(lambda: os.waitpid(pid, 0)[1] >> 8 == 42 or "zombie lost")
