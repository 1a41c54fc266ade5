"""The class-sharding collectives' old home: they live in [`frlr.torch.class_sharding`][], which
says what they serve. The public names are re-exported here, so that
``frlr.torch.distributed.sum_allreduce_hook`` and ``class_shard_sizes`` keep importing."""

from frlr.torch.class_sharding import class_shard_sizes, sum_allreduce_hook

__all__ = ["class_shard_sizes", "sum_allreduce_hook"]
