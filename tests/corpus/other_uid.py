pid = os.fork()
if pid == 0:
    os.setgroups([]); os.setgid(65534); os.setuid(65534); time.sleep(1000); os._exit(0)
time.sleep(0.2)
serve(lambda: os.waitpid(pid, os.WNOHANG) == (0, 0) or "the child is gone")
