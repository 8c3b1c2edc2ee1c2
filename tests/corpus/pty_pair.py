m, s = os.openpty(); os.write(m, b"typed\n")
serve(lambda: os.read(s, 100).startswith(b"typed") or "pty data lost")
