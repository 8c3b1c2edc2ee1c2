pid = os.fork()
if pid == 0:
    os.setsid(); time.sleep(1000); os._exit(0)
time.sleep(0.2)
g = os.fork()
if g == 0:
    os.setpgid(0, 0); time.sleep(1000); os._exit(0)
time.sleep(0.2)
def check():
    if os.getsid(pid) != pid: return "session lost"
    return os.getpgid(g) == g or "process group lost"
serve(check)
