model = dict(type="DigitsLinearProbe", width=16, num_classes=10)
