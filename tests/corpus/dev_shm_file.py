fd = os.open("/dev/shm/cns-corpus", os.O_RDWR | os.O_CREAT); os.ftruncate(fd, 4096)
m = mmap.mmap(fd, 4096); m[:5] = b"shmem"
serve(lambda: m[:5] == b"shmem" and open("/dev/shm/cns-corpus", "rb").read(5) == b"shmem" or "shm lost")
