model = dict(type="VDSR", channels=32, depth=6)
