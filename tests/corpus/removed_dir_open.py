os.mkdir(path("dir")); fd = os.open(path("dir"), os.O_RDONLY | os.O_DIRECTORY); os.rmdir(path("dir"))
serve(lambda: os.fstat(fd).st_nlink == 0 or "directory came back linked")
