import termios
m, s = os.openpty()
os.setsid()
fcntl.ioctl(s, termios.TIOCSCTTY, 0)
tty = os.open("/dev/tty", os.O_RDWR)
def check():
    os.write(tty, b"via /dev/tty\n")
    return os.read(m, 100).startswith(b"via /dev/tty") or "the controlling terminal lost its master"
serve(check)
