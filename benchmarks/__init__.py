"""edgecnn.benchmarks: size, latency and memory measurement across runtimes, threads and devices
(local CPU/GPU, a board over ssh, Android over adb), plus the project's benchmark scripts."""
