"""Weight-sharing supernet over the MnasNet space: elastic layers, the supernet, its training recipe and
checkpoint, and ``accuracy=supernet`` (an architecture scored as a slice of the trained supernet)."""
