os.mkdir(path("cwd")); os.chdir(path("cwd")); os.rmdir(path("cwd"))
serve(lambda: os.stat(".").st_nlink == 0 or "cwd came back linked")
