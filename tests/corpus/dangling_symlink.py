os.symlink("/no/such/target", path("dangling"))
fd = os.open(path("dangling"), os.O_PATH | os.O_NOFOLLOW)
serve(lambda: os.readlink("/proc/self/fd/%d" % fd).endswith("dangling") or "fd lost")
