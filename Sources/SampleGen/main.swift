// graft-samplegen: writes the tiny SDXL-shaped samples in Samples/ (placeholder).
print("samplegen: not yet")
