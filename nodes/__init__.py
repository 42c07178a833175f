"""The pack's nodes, registered with ComfyUI through the V3 extension API."""

from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

from .baseline_nodes import BestOfNSample, TeacherRewritePrompt
from .latent_nodes import TAEHVImageToVideoLatent
from .model_folders import register_folders
from .teacher_nodes import RewardQuery, TeacherAnalyze, VLMScore, VLMTeacherLoader
from .tto_nodes import LoadConditioningFile, LoRAAttach, TTOLoop


class VLMTeacherExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [VLMTeacherLoader, TeacherAnalyze, RewardQuery, VLMScore, LoRAAttach, TTOLoop, LoadConditioningFile,
                BestOfNSample, TeacherRewritePrompt, TAEHVImageToVideoLatent]


async def comfy_entrypoint() -> VLMTeacherExtension:
    register_folders()
    return VLMTeacherExtension()
