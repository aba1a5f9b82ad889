"""Model compression (§15), pure PyTorch/NumPy: each method is a module, each variant a model package.

- :mod:`.prune` magnitude pruning (global or per layer) and the mask hook that keeps pruned weights at
  zero while fine-tuning on the one training loop;
- :mod:`.kmeans` weight sharing: per-layer k-means codebooks, the centroid fine-tuning hook;
- :mod:`.huffman` canonical Huffman coding (Deep Compression's last step);
- :mod:`.lowrank` truncated-SVD factorisation of convolutions and linears, rank by energy;
- :mod:`.binary` binary / ternary weights;
- :mod:`.quantize` int8: static post-training quantisation and dynamic quantisation of linears (torchao's
  pt2e flow), lowered to oneDNN int8 kernels on x86;
- :mod:`.onnx` fp32 export to ONNX, served by onnxruntime;
- :mod:`.package` the ``"format": "compressed"`` model package all of them are saved as, its loader
  (:func:`.package.load_compressed_package`) and its size; :mod:`.latency` timing at batch 1 and 64.

Example (prune → share → Huffman, the Deep Compression chain)::

    from components.compression import prune, kmeans, package
    masks = prune.prune_(model.net, 0.9, scope="global")
    books = kmeans.share_(model.net, clusters=32)
    package.save_deep(directory, model, spec, books)   # sparse positions + indices Huffman-coded
    served, spec = package.load_compressed_package(directory)
"""
