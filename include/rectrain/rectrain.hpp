#pragma once
// rectrain: recommender-system training components for LibTorch.
// The umbrella header; each part can also be included on its own.

#include <rectrain/als/embedding_init.hpp>
#include <rectrain/als/implicit_als.hpp>
#include <rectrain/als/sparse_matrix.hpp>
#include <rectrain/core/atomic_file.hpp>
#include <rectrain/core/compat.hpp>
#include <rectrain/core/error.hpp>
#include <rectrain/core/huge_pages.hpp>
#include <rectrain/core/id_map.hpp>
#include <rectrain/core/random.hpp>
#include <rectrain/core/text.hpp>
#include <rectrain/core/version.hpp>
#include <rectrain/data/batch.hpp>
#include <rectrain/data/batch_pipeline.hpp>
#include <rectrain/data/csv.hpp>
#include <rectrain/data/dataset.hpp>
#include <rectrain/data/group_sampler.hpp>
#include <rectrain/data/predictions.hpp>
#include <rectrain/data/synthetic.hpp>
#include <rectrain/data/table.hpp>
#include <rectrain/data/tensor_file.hpp>
#include <rectrain/loss/ranking.hpp>
#include <rectrain/metrics/baselines.hpp>
#include <rectrain/metrics/ranking.hpp>
