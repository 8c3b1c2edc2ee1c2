def check():
    try:
        os.mkdir(path("denied"))
        return "mkdir was allowed"
    except PermissionError:
        return True
serve(check)
