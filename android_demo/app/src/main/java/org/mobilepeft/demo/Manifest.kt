package org.mobilepeft.demo

import java.io.File
import java.security.MessageDigest
import org.json.JSONArray
import org.json.JSONObject

/** A bundle that cannot be used; the message lists every problem found, not only the first. */
class BundleError(message: String) : Exception(message)

data class FileEntry(val path: String, val sha256: String, val size: Long)

data class TrainableEntry(
    val name: String,
    val module: String,
    val slot: String,
    val shape: LongArray,
    val dtype: String,
)

/** One rank-mask graph input, in the order the graphs take them. */
data class MaskSlot(val module: String, val slot: String, val rMax: Int) {
    val inputName: String get() = Contract.maskInputName(module, slot)
}

data class Phase(
    val startStep: Int,
    val ranks: Map<String, Map<String, Int>>,
    /** Optional soft masks (ARD-LoRA); absent slots use the prefix mask of their rank. */
    val masks: Map<String, Map<String, FloatArray>>,
)

/**
 * The manifest's rank schedule: which phase is active at a step and the mask of each slot in it.
 * Same rule as `RankSchedule.phase_at` / `RankSchedule.mask` in mobile_peft/allocators/schedule.py.
 */
class RankSchedule(val phases: List<Phase>, val masks: List<MaskSlot>) {
    fun phaseIndexAt(step: Int): Int {
        var current = 0
        phases.forEachIndexed { i, p -> if (p.startStep <= step) current = i }
        return current
    }

    fun maskValues(phase: Phase, slot: MaskSlot): FloatArray {
        phase.masks[slot.module]?.get(slot.slot)?.let { return it.copyOf() }
        val rank = phase.ranks[slot.module]?.get(slot.slot)
            ?: throw BundleError("phase starting at step ${phase.startStep} has no rank for ${slot.inputName}")
        return FloatArray(slot.rMax) { if (it < rank) 1f else 0f }
    }
}

data class InputSpec(
    val imageSize: Int,
    val imageMean: FloatArray,
    val imageStd: FloatArray,
    val promptTemplate: String,
    val maxTextLen: Int,
    val sequenceLength: Int,
    val batchSize: Int,
    /** Special-token ids written by the exporter (e.g. pad / bos / eos); may be empty. */
    val tokenIds: Map<String, Int>,
    val tokenizerFile: String,
)

data class OptimizerSpec(val name: String, val lr: Double)

/**
 * `manifest.json` of a bundle directory, parsed and checked. [load] collects every problem into one
 * [BundleError]; [verifyFiles] checks the size and sha256 of every file the manifest lists.
 */
class Manifest private constructor(
    val dir: File,
    val format: String,
    val inputSpec: InputSpec,
    val trainable: List<TrainableEntry>,
    val schedule: RankSchedule,
    val optimizer: OptimizerSpec,
    val files: List<FileEntry>,
) {
    fun file(name: String): File = File(dir, name)

    /** Every listed file exists, has the listed size and sha256; throws one error naming all that do not. */
    fun verifyFiles() {
        val problems = mutableListOf<String>()
        for (entry in files) {
            if (entry.path.startsWith("/") || entry.path.split('/').contains("..")) {
                problems += "${entry.path}: paths must stay inside the bundle"
                continue
            }
            val f = File(dir, entry.path)
            when {
                !f.exists() -> problems += "${entry.path}: missing"
                sizeOf(f) != entry.size -> problems += "${entry.path}: ${sizeOf(f)} bytes, manifest says ${entry.size}"
                else -> {
                    val actual = sha256(f)
                    if (!actual.equals(entry.sha256, ignoreCase = true)) {
                        problems += "${entry.path}: sha256 $actual, manifest says ${entry.sha256}"
                    }
                }
            }
        }
        if (problems.isNotEmpty()) {
            throw BundleError("bundle ${dir.path} failed verification (re-push it):\n  - " + problems.joinToString("\n  - "))
        }
    }

    companion object {
        // Layout of the schedule JSON inside rank_schedule (mobile_peft/allocators/schedule.py, version 1).
        // These are not in export/contract.py; they mirror the schedule's own to_dict().
        private const val SCHEDULE_SLOTS = "slots"
        private const val SCHEDULE_R_MAX = "r_max"
        private const val PHASE_START_STEP = "start_step"
        private const val PHASE_RANKS = "ranks"
        private const val PHASE_MASKS = "masks"

        fun load(dir: File): Manifest {
            val file = File(dir, Contract.MANIFEST_FILE)
            if (!file.isFile) throw BundleError("${file.path} not found; push a bundle directory made by `mobile-peft export`.")
            val root = try {
                JSONObject(file.readText())
            } catch (e: Exception) {
                throw BundleError("${file.path} is not valid JSON (${e.message}).")
            }
            val problems = mutableListOf<String>()
            Contract.REQUIRED_KEYS.filterNot(root::has).forEach { problems += "missing key '$it'" }
            if (root.optString(Contract.KEY_SCHEMA) != Contract.SCHEMA_NAME) {
                problems += "schema is '${root.optString(Contract.KEY_SCHEMA)}'; expected '${Contract.SCHEMA_NAME}'"
            }
            val version = root.optInt(Contract.KEY_SCHEMA_VERSION, -1)
            if (version !in Contract.SUPPORTED_SCHEMA_VERSIONS) {
                problems += "schema_version $version is not one this app reads (${Contract.SUPPORTED_SCHEMA_VERSIONS.toList()}); update the app or re-export"
            }
            val format = root.optString(Contract.KEY_FORMAT)
            if (format !in listOf(Contract.FORMAT_PTE, Contract.FORMAT_ONNX, Contract.FORMAT_COREML)) {
                problems += "format '$format' is unknown"
            }
            if (problems.isNotEmpty()) throw BundleError("invalid manifest ${file.path}:\n  - " + problems.joinToString("\n  - "))

            val spec = parseInputSpec(root.getJSONObject(Contract.KEY_INPUT_SPEC), problems)
            val trainable = parseTrainable(root.getJSONArray(Contract.KEY_TRAINABLE), problems)
            // A Core ML bundle (head only) has no rank schedule: JSON null.
            val schedule = root.optJSONObject(Contract.KEY_RANK_SCHEDULE)?.let { parseSchedule(it, problems) }
                ?: RankSchedule(listOf(Phase(0, emptyMap(), emptyMap())), emptyList())
            val opt = root.getJSONObject(Contract.KEY_OPTIMIZER)
            val optimizer = OptimizerSpec(opt.optString(Contract.OPTIMIZER_NAME, "sgd"), opt.optDouble(Contract.OPTIMIZER_LR, Double.NaN))
            if (optimizer.lr.isNaN() || optimizer.lr <= 0) problems += "optimizer.lr must be a positive number"
            val files = parseFiles(root.get(Contract.KEY_FILES), problems)
            if (problems.isNotEmpty()) throw BundleError("invalid manifest ${file.path}:\n  - " + problems.joinToString("\n  - "))
            return Manifest(dir, format, spec, trainable, schedule, optimizer, files)
        }

        private fun floats(a: JSONArray): FloatArray = FloatArray(a.length()) { a.getDouble(it).toFloat() }

        private fun parseInputSpec(o: JSONObject, problems: MutableList<String>): InputSpec {
            listOf(
                Contract.INPUT_SPEC_IMAGE_SIZE, Contract.INPUT_SPEC_IMAGE_MEAN, Contract.INPUT_SPEC_IMAGE_STD,
                Contract.INPUT_SPEC_PROMPT_TEMPLATE, Contract.INPUT_SPEC_MAX_TEXT_LEN, Contract.INPUT_SPEC_BATCH_SIZE,
            ).filterNot(o::has).forEach { problems += "input_spec has no '$it'" }
            val ids = mutableMapOf<String, Int>()
            o.optJSONObject(Contract.INPUT_SPEC_TOKEN_IDS)?.let { t -> t.keys().forEach { k -> ids[k] = t.getInt(k) } }
            val spec = InputSpec(
                imageSize = o.optInt(Contract.INPUT_SPEC_IMAGE_SIZE, 0),
                imageMean = o.optJSONArray(Contract.INPUT_SPEC_IMAGE_MEAN)?.let(::floats) ?: FloatArray(0),
                imageStd = o.optJSONArray(Contract.INPUT_SPEC_IMAGE_STD)?.let(::floats) ?: FloatArray(0),
                promptTemplate = o.optString(Contract.INPUT_SPEC_PROMPT_TEMPLATE),
                maxTextLen = o.optInt(Contract.INPUT_SPEC_MAX_TEXT_LEN, 0),
                sequenceLength = o.optInt(Contract.INPUT_SPEC_SEQUENCE_LENGTH, 0),
                batchSize = o.optInt(Contract.INPUT_SPEC_BATCH_SIZE, 1),
                tokenIds = ids,
                tokenizerFile = o.optString(Contract.INPUT_SPEC_TOKENIZER_FILE, Contract.TOKENIZER_FILE),
            )
            if (spec.imageSize <= 0) problems += "input_spec.image_size must be positive"
            if (spec.imageMean.size != 3 || spec.imageStd.size != 3) problems += "input_spec image_mean / image_std need 3 values"
            if (!spec.promptTemplate.contains("{question}")) problems += "input_spec.prompt_template has no '{question}'"
            if (spec.maxTextLen <= 2) problems += "input_spec.max_text_len must be > 2"
            ids["ignore_index"]?.let {
                if (it.toLong() != PreprocessDefaults.IGNORE_INDEX) problems += "input_spec.token_ids.ignore_index is $it; this app labels with ${PreprocessDefaults.IGNORE_INDEX}"
            }
            return spec
        }

        private fun parseTrainable(a: JSONArray, problems: MutableList<String>): List<TrainableEntry> =
            (0 until a.length()).mapNotNull { i ->
                val o = a.getJSONObject(i)
                val missing = listOf(Contract.TRAINABLE_NAME, Contract.TRAINABLE_SHAPE).filterNot(o::has)
                if (missing.isNotEmpty()) {
                    problems += "trainable[$i] has no $missing"
                    null
                } else {
                    val shape = o.getJSONArray(Contract.TRAINABLE_SHAPE)
                    TrainableEntry(
                        o.getString(Contract.TRAINABLE_NAME),
                        o.optString(Contract.TRAINABLE_MODULE),
                        o.optString(Contract.TRAINABLE_SLOT),
                        LongArray(shape.length()) { shape.getLong(it) },
                        o.optString(Contract.TRAINABLE_DTYPE, "float32"),
                    )
                }
            }

        private fun parseSchedule(o: JSONObject, problems: MutableList<String>): RankSchedule {
            val modules = o.optJSONObject(Contract.RANK_SCHEDULE_MODULES) ?: JSONObject()
            fun rMax(module: String, slot: String): Int =
                modules.optJSONObject(module)?.optJSONObject(SCHEDULE_SLOTS)?.optJSONObject(slot)?.optInt(SCHEDULE_R_MAX, -1) ?: -1

            val masks = mutableListOf<MaskSlot>()
            val list = o.optJSONArray(Contract.RANK_SCHEDULE_MASKS)
            if (list == null) problems += "rank_schedule has no '${Contract.RANK_SCHEDULE_MASKS}' list (the graphs' mask input order)"
            for (i in 0 until (list?.length() ?: 0)) {
                // export/bundle.py writes {"module", "slot", "r_max", "input", "applied_as"}; a bare
                // input-name string is accepted too.
                val item = list!!.get(i)
                val (module, slot) = if (item is JSONObject) {
                    item.optString(Contract.TRAINABLE_MODULE) to item.optString(Contract.TRAINABLE_SLOT)
                } else {
                    val base = item.toString().removeSuffix(Contract.MASK_SUFFIX)
                    base.substringBeforeLast('.') to base.substringAfterLast('.')
                }
                val r = (item as? JSONObject)?.optInt(SCHEDULE_R_MAX, -1)?.takeIf { it > 0 } ?: rMax(module, slot)
                if (r <= 0) problems += "rank_schedule.masks[$i] ($module.$slot): no r_max in rank_schedule.modules"
                masks += MaskSlot(module, slot, r)
            }

            val phasesJson = o.optJSONArray(Contract.RANK_SCHEDULE_PHASES) ?: JSONArray()
            val phases = (0 until phasesJson.length()).map { i ->
                val p = phasesJson.getJSONObject(i)
                val ranks = mutableMapOf<String, Map<String, Int>>()
                p.optJSONObject(PHASE_RANKS)?.let { r ->
                    r.keys().forEach { m -> val s = r.getJSONObject(m); ranks[m] = s.keys().asSequence().associateWith(s::getInt) }
                }
                val soft = mutableMapOf<String, Map<String, FloatArray>>()
                p.optJSONObject(PHASE_MASKS)?.let { r ->
                    r.keys().forEach { m -> val s = r.getJSONObject(m); soft[m] = s.keys().asSequence().associateWith { floats(s.getJSONArray(it)) } }
                }
                Phase(p.optInt(PHASE_START_STEP, -1), ranks, soft)
            }
            if (phases.isEmpty() || phases[0].startStep != 0) problems += "rank_schedule needs phases, the first starting at step 0"
            for ((i, p) in phases.withIndex()) for (m in masks) {
                val v = p.masks[m.module]?.get(m.slot)
                if (v != null && v.size != m.rMax) problems += "phase $i: mask of ${m.inputName} has ${v.size} values; r_max is ${m.rMax}"
                if (v == null && p.ranks[m.module]?.get(m.slot) == null) problems += "phase $i gives no rank for ${m.inputName}"
            }
            return RankSchedule(phases, masks)
        }

        private fun parseFiles(value: Any, problems: MutableList<String>): List<FileEntry> {
            // A list of {path, sha256, size}; a {path: {sha256, size}} object is accepted too.
            val out = mutableListOf<FileEntry>()
            fun add(path: String, o: JSONObject) {
                val sha = o.optString(Contract.FILE_SHA256)
                if (sha.length != 64) problems += "files: '$path' has no 64-hex-digit sha256"
                out += FileEntry(path, sha, o.optLong(Contract.FILE_SIZE, -1))
            }
            when (value) {
                is JSONArray -> for (i in 0 until value.length()) value.getJSONObject(i).let { add(it.optString(Contract.FILE_PATH), it) }
                is JSONObject -> value.keys().forEach { add(it, value.getJSONObject(it)) }
                else -> problems += "files must be a list"
            }
            return out
        }

        /** Files under a directory entry (an `.mlpackage`), sorted as Python sorts `Path`s: by components. */
        private fun filesUnder(d: File): List<Pair<String, File>> {
            val all = d.walkTopDown().filter { it.isFile }.map { it.relativeTo(d).invariantSeparatorsPath to it }.toList()
            val byParts = Comparator<Pair<String, File>> { a, b ->
                val pa = a.first.split('/')
                val pb = b.first.split('/')
                (0 until minOf(pa.size, pb.size)).map { pa[it].compareTo(pb[it]) }.firstOrNull { it != 0 } ?: (pa.size - pb.size)
            }
            return all.sortedWith(byParts)
        }

        fun sizeOf(f: File): Long = if (f.isFile) f.length() else filesUnder(f).sumOf { it.second.length() }

        /**
         * sha256 as export/manifest.py `sha256_of` computes it: a file's bytes; for a directory, for each
         * file in sorted order its relative POSIX path, a NUL byte, then its bytes.
         */
        fun sha256(f: File): String {
            val md = MessageDigest.getInstance("SHA-256")
            val buf = ByteArray(1 shl 20)
            val files = if (f.isFile) listOf("" to f) else filesUnder(f)
            for ((rel, file) in files) {
                if (!f.isFile) {
                    md.update(rel.toByteArray(Charsets.UTF_8))
                    md.update(0.toByte())
                }
                file.inputStream().use { input ->
                    while (true) {
                        val n = input.read(buf)
                        if (n < 0) break
                        md.update(buf, 0, n)
                    }
                }
            }
            return md.digest().joinToString("") { "%02x".format(it) }
        }
    }
}
