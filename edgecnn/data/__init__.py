"""edgecnn.data: image loading, transforms and datasets (image folders, Fashion-MNIST, CIFAR-10)."""
