model = dict(type="DigitsCNN", channels=32, num_classes=10, dropout=0.1)
