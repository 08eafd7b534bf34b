"""tlkit: transfer learning you can read, run and watch.

The public API is re-exported here; see each module for details.
"""
from tlkit.backbones import Backbone, list_backbones, load_backbone
from tlkit.errors import WeightsUnavailableError
from tlkit.freezing import (count_parameters, format_summary, freeze, freeze_to, param_groups,
                            set_bn_policy, trainable_summary, unfreeze)
from tlkit.heads import make_head, replace_head

__version__ = "0.1.0"
