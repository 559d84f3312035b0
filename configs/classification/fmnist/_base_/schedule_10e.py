# 10 epochs of SGD, lr 0.1 for batch 128, divided by 10 after epochs 5 and 8 (the real-data
# issue's recipe: a budget where every method gets the same number of steps).
optimizer = dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4)
schedule = dict(epochs=10, milestones=[5, 8], gamma=0.1)
