model = dict(type="DigitsMLP", hidden=64, num_classes=10)
