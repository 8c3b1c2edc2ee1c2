fd = os.memfd_create("corpus", os.MFD_ALLOW_SEALING); os.write(fd, b"sealed data")
fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
def check():
    seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    if seals & fcntl.F_SEAL_WRITE == 0: return "seals lost: %x" % seals
    return os.pread(fd, 100, 0) == b"sealed data" or "content lost"
serve(check)
