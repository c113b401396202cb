model = dict(type="ShapesFCN", num_classes=4, channels=12, ignore_index=255)
