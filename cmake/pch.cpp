// Anchor translation unit for the shared precompiled <torch/torch.h>.
#include <torch/torch.h>
