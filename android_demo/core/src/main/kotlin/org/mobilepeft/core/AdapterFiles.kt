package org.mobilepeft.core

import java.io.File

/** path -> slot -> (active rank, alpha or null for rank 0) of an effective adapter. */
typealias ModuleRanks = Map<String, Map<String, Pair<Int, Double?>>>

/**
 * The personal adapter on disk, byte for byte as the SDK writes it (mobile_peft/core/adapter_files.py
 * + runtime/adapter.py `write_adapter`): `adapter_config.json` (sorted keys, indent 2) and
 * `adapter_model.safetensors`. LoRA files are Hugging Face PEFT files; Hydra files use the same
 * layout with the SDK's own `peft_type` and parameter names.
 *
 * What is written is the *effective* adapter at the final masks: only active ranks (mask != 0),
 * each up-projection column multiplied by its mask value, `r` = active ranks and
 * `alpha = scale * r`; a module whose every rank is masked off is left out. Paths are relative to
 * `language_model` when every LoRA module lives there. Down and up come from the recorded roles.
 */
object AdapterFiles {
    const val CONFIG_FILE = "adapter_config.json"
    const val WEIGHTS_FILE = "adapter_model.safetensors"
    const val FORMAT_VERSION = 1
    const val KEY_PREFIX = "base_model.model."
    const val METADATA_KEY = "mobile_peft"
    private const val LM_ROOT = "language_model"
    // Keys of adapter_config.json / the header that are not manifest keys.
    private const val PEFT_TYPE = "peft_type"
    private const val TASK_TYPE = "task_type"
    private const val TARGET_MODULES = "target_modules"
    private const val EXCLUDE_MODULES = "exclude_modules"
    private const val RANK_PATTERN = "rank_pattern"
    private const val ALPHA_PATTERN = "alpha_pattern"

    /** PEFT LoraConfig fields this SDK's LoRA cannot honour, with the value that is fine. */
    private val LORA_FIXED: Map<String, Any?> = linkedMapOf(
        "use_dora" to false, "use_rslora" to false, "bias" to "none", "fan_in_fan_out" to false,
        "modules_to_save" to null, "layers_to_transform" to null, "target_parameters" to null, "lora_bias" to false,
    )

    fun tensorKey(path: String, param: String): String = "$KEY_PREFIX$path.$param.weight"

    /** Python's `re.escape` (3.7+: only regex metacharacters and whitespace are escaped). */
    fun exactPattern(path: String): String {
        val special = "()[]{}?*+-|^$\\.&~# \t\n\r\u000b\u000c"
        return buildString { for (c in path) { if (c in special) append('\\'); append(c) } }
    }

    /** The most frequent value; ties go to the first seen (`Counter.most_common(1)`). */
    fun <T> mostCommon(values: List<T>): T {
        val counts = LinkedHashMap<T, Int>()
        for (v in values) counts[v] = (counts[v] ?: 0) + 1
        return counts.entries.maxByOrNull { it.value }!!.key // first of the maxima
    }

    fun loraConfig(r: Int, alpha: Double, targets: List<String>, dropout: Double, rankPattern: Map<String, Any?>, alphaPattern: Map<String, Any?>): Map<String, Any?> =
        linkedMapOf<String, Any?>(
            PEFT_TYPE to Contract.PEFT_TYPES.getValue(Contract.ADAPTER_LORA), TASK_TYPE to null, "base_model_name_or_path" to null,
            "inference_mode" to true, "r" to r, "lora_alpha" to alpha, "lora_dropout" to dropout, TARGET_MODULES to targets,
            EXCLUDE_MODULES to null, RANK_PATTERN to rankPattern, ALPHA_PATTERN to alphaPattern, "init_lora_weights" to true,
        ).apply { putAll(LORA_FIXED) }

    fun hydraConfig(rParallel: Int, rSequential: Int, alpha: Double, targets: List<String>, dropout: Double, rankPattern: Map<String, Any?>, alphaPattern: Map<String, Any?>): Map<String, Any?> =
        linkedMapOf(
            PEFT_TYPE to Contract.PEFT_TYPES.getValue(Contract.ADAPTER_HYDRA), TASK_TYPE to null, "r_parallel" to rParallel,
            "r_sequential" to rSequential, "alpha" to alpha, TARGET_MODULES to targets, EXCLUDE_MODULES to null,
            "dropout" to dropout, RANK_PATTERN to rankPattern, ALPHA_PATTERN to alphaPattern, "init" to "default",
        )

    /**
     * The config that rebuilds exactly [modules]: the most common rank (pair) and alpha are the
     * defaults, modules that differ get exact-path `rank_pattern` / `alpha_pattern` entries.
     */
    fun effectiveConfig(method: String, modules: ModuleRanks, dropout: Double): Map<String, Any?> {
        val (lora) = Contract.SLOTS.getValue(Contract.ADAPTER_LORA)
        val (parallel, sequential) = Contract.SLOTS.getValue(Contract.ADAPTER_HYDRA)
        return when (method) {
            Contract.ADAPTER_LORA -> {
                val pairs = modules.mapValues { (_, slots) -> slots.getValue(lora) }
                val (r, alpha) = mostCommon(pairs.values.toList())
                loraConfig(
                    r, alpha!!, pairs.keys.toList(), dropout,
                    pairs.filter { it.value.first != r }.entries.associate { (p, v) -> exactPattern(p) to v.first },
                    pairs.filter { it.value.second != alpha }.entries.associate { (p, v) -> exactPattern(p) to v.second },
                )
            }
            Contract.ADAPTER_HYDRA -> {
                val ranks = modules.mapValues { (_, s) -> s.getValue(parallel).first to s.getValue(sequential).first }
                val (rp, rs) = mostCommon(ranks.values.toList())
                val alpha = mostCommon(modules.values.flatMap { s -> s.values.mapNotNull { it.second } })
                val rankPattern = LinkedHashMap<String, Any?>()
                val alphaPattern = LinkedHashMap<String, Any?>()
                for ((path, slots) in modules) {
                    val (p, s) = ranks.getValue(path)
                    if (p != rp || s != rs) rankPattern[exactPattern(path)] = linkedMapOf(parallel to p, sequential to s)
                    val differ = slots.filter { (_, v) -> v.second != null && v.second != alpha }.mapValues { it.value.second }
                    if (differ.isNotEmpty()) alphaPattern[exactPattern(path)] = differ
                }
                hydraConfig(rp, rs, alpha, modules.keys.toList(), dropout, rankPattern, alphaPattern)
            }
            else -> throw ConfigError("adapter method ${Py.repr(method)} has no file format; expected one of ${Py.repr(Contract.PEFT_TYPES.keys.sorted())}.")
        }
    }

    fun metadata(method: String, root: String, sdkVersion: String): Map<String, Any?> =
        linkedMapOf("method" to method, "root" to root, "mobile_peft_version" to sdkVersion, "format_version" to FORMAT_VERSION)

    /** The two files' bytes: config JSON (sorted keys, indent 2, newline) and the safetensors. */
    fun fileBytes(config: Map<String, Any?>, tensors: Map<String, Tensor>, metadata: Map<String, Any?>): Map<String, ByteArray> {
        val header = mapOf("format" to "pt", METADATA_KEY to Json.dumps(metadata, sortKeys = true))
        return linkedMapOf(
            CONFIG_FILE to (Json.dumps(config, indent = 2, sortKeys = true) + "\n").toByteArray(Charsets.UTF_8),
            WEIGHTS_FILE to Safetensors.bytes(tensors, header),
        )
    }

    /**
     * `write_adapter`: the effective adapter of [params] (manifest names -> values) at [masks]
     * (graph-input order) as file name -> bytes; [write] puts them in a directory.
     */
    fun effectiveAdapter(schedule: RankSchedule, trainable: List<Trainable>, sdkVersion: String, params: Map<String, FloatArray>, masks: List<FloatArray>): Map<String, ByteArray> {
        val maskOf = schedule.maskInputs.zip(masks).associate { (e, m) -> (e.module to e.slot) to m }
        val pairs = LinkedHashMap<Pair<String, String>, MutableMap<String, Trainable>>()
        for (t in trainable) pairs.getOrPut(t.module to t.slot) { LinkedHashMap() }[t.role] = t
        val modules = trainable.map { it.module }.distinct()
        val root = if (schedule.adapter == Contract.ADAPTER_LORA && modules.isNotEmpty() && modules.all { it.startsWith("$LM_ROOT.") }) LM_ROOT else ""
        val effective = LinkedHashMap<String, Map<String, Pair<Int, Double?>>>()
        val tensors = LinkedHashMap<String, Tensor>()
        for (module in modules) {
            val rel = if (root.isNotEmpty()) module.substring(root.length + 1) else module
            val entry = LinkedHashMap<String, Pair<Int, Double?>>()
            val moduleTensors = LinkedHashMap<String, Tensor>()
            for ((key, pair) in pairs) {
                if (key.first != module) continue
                val down = pair[Contract.ROLE_DOWN] ?: throw ConfigError("$module.${key.second} has no ${Contract.ROLE_DOWN} tensor")
                val up = pair[Contract.ROLE_UP] ?: throw ConfigError("$module.${key.second} has no ${Contract.ROLE_UP} tensor")
                val mask = maskOf[key] ?: throw ConfigError("no mask for $module.${key.second}")
                val active = mask.indices.filter { mask[it] != 0f }
                val d = params[down.name] ?: throw ConfigError("no values for ${down.name}")
                val u = params[up.name] ?: throw ConfigError("no values for ${up.name}")
                val rMax = down.shape[0].toInt()
                val fanIn = down.shape[1].toInt()
                val out = up.shape[0].toInt()
                moduleTensors[down.param] = Tensor(listOf(active.size.toLong(), fanIn.toLong()), FloatArray(active.size * fanIn) { d[active[it / fanIn] * fanIn + it % fanIn] })
                moduleTensors[up.param] = Tensor(listOf(out.toLong(), active.size.toLong()), FloatArray(out * active.size) {
                    val r = active[it % active.size]
                    u[(it / active.size) * rMax + r] * mask[r]
                })
                entry[key.second] = active.size to if (active.isNotEmpty()) schedule.scale(module, key.second) * active.size else null
            }
            if (entry.values.none { it.first != 0 }) continue // every rank masked off: nothing to save
            effective[rel] = entry
            for ((param, t) in moduleTensors) tensors[tensorKey(rel, param)] = t
        }
        if (effective.isEmpty()) throw ConfigError("every adapter module has all its ranks masked off; there is nothing to export.")
        val config = effectiveConfig(schedule.adapter, effective, schedule.dropout)
        return fileBytes(config, tensors, metadata(schedule.adapter, root, sdkVersion))
    }

    /** Write [files] (name -> bytes) into [dir], each atomically. */
    fun write(dir: File, files: Map<String, ByteArray>): File {
        if (dir.exists() && !dir.isDirectory) throw CheckpointError("cannot save an adapter to $dir: it exists and is not a directory.")
        dir.mkdirs()
        for ((name, bytes) in files) AtomicFiles.write(File(dir, name), bytes)
        return dir
    }
}
