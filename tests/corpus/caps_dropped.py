def check():
    eff = [l for l in open("/proc/self/status") if l.startswith("CapEff:")][0].split()[1]
    return int(eff, 16) == 0 or "capabilities came back: " + eff
serve(check)
