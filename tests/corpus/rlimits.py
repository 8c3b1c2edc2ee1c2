import resource
resource.setrlimit(resource.RLIMIT_NOFILE, (100, 200)); resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
serve(lambda: resource.getrlimit(resource.RLIMIT_NOFILE) == (100, 200) or "rlimit changed")
