package org.mobilepeft.core

import java.io.File

/**
 * One trainable tensor (a manifest `trainable` entry): its graph name, adapter module, rank slot,
 * [role] ([Contract.ROLE_DOWN] `[r_max, fan_in]` / [Contract.ROLE_UP] `[out, r_max]`, recorded by
 * the exporter and never read from the name), parameter name inside the module, shape and dtype.
 */
data class Trainable(
    val name: String,
    val module: String,
    val slot: String,
    val role: String,
    val param: String,
    val shape: List<Long>,
    val dtype: String,
) {
    val numel: Int get() = shape.fold(1L) { a, b -> a * b }.toInt()
}

data class FileEntry(val path: String, val sha256: String, val size: Long)

data class OptimizerSpec(val name: String, val lr: Double, val raw: Map<String, Any?>)

/**
 * A parsed, valid `manifest.json` (mobile_peft/core/manifest.py `Manifest`): the sections a phone
 * needs are typed, the rest stay JSON objects. Read a bundle with [validateBundle] (structure,
 * then every file's size and sha256; one [BundleError] naming every problem) or a JSON object
 * with [fromJson].
 */
class Manifest(
    val format: String,
    val sdkVersion: String,
    val model: Map<String, Any?>,
    val inputSpec: BundleInputSpec,
    val methods: Map<String, Any?>,
    val trainable: List<Trainable>,
    val schedule: RankSchedule,
    val performanceModel: Map<String, Any?>?,
    val optimizer: OptimizerSpec,
    val backbone: Map<String, Any?>,
    val files: List<FileEntry>,
    val raw: Map<String, Any?>,
) {
    /** The optional `memory_bound` section ([Contract.MemoryBoundKey]); null in bundles written before it. */
    @Suppress("UNCHECKED_CAST")
    val memoryBound: Map<String, Any?>? get() = raw[Contract.Key.MEMORY_BOUND] as? Map<String, Any?>

    /** `(module, slot) -> role -> tensor`, from the recorded roles. */
    fun slotPairs(): Map<Pair<String, String>, Map<String, Trainable>> {
        val out = LinkedHashMap<Pair<String, String>, MutableMap<String, Trainable>>()
        for (t in trainable) out.getOrPut(t.module to t.slot) { LinkedHashMap() }[t.role] = t
        return out
    }

    companion object {
        /** Parse [d]; every problem of [manifestProblems] and of the typed reading in one [BundleError]. */
        fun fromJson(d: Any?, source: String = "manifest"): Manifest {
            val problems = manifestProblems(d).toMutableList()
            if (problems.isNotEmpty()) throw BundleError(source, problems)
            @Suppress("UNCHECKED_CAST")
            return ManifestReader(d as Map<String, Any?>, problems).read() ?: throw BundleError(source, problems)
        }

        /** Read and check a bundle directory: manifest structure, then every file's size and sha256. */
        fun validateBundle(bundle: File): Manifest {
            val source = bundle.path
            if (!bundle.isDirectory) throw BundleError(source, listOf("not a directory (unzip a .zip bundle first, or pass the directory)"))
            val path = File(bundle, Contract.MANIFEST_FILE)
            if (!path.isFile) {
                throw BundleError(source, listOf("no ${Contract.MANIFEST_FILE}; is this a bundle written by `mobile-peft export`?"))
            }
            val d = try {
                Json.parseFile(path)
            } catch (e: JsonError) {
                throw BundleError(source, listOf("${Contract.MANIFEST_FILE} is not valid JSON (${e.message})"))
            }
            if (d !is Map<*, *>) throw BundleError(source, listOf("${Contract.MANIFEST_FILE} holds a ${Py.typeName(d)}, not an object"))
            val problems = manifestProblems(d).toMutableList()
            problems += fileProblems(bundle, d[Contract.Key.FILES])
            if (problems.isNotEmpty()) throw BundleError(source, problems)
            return fromJson(d, source)
        }

        private fun fileProblems(bundle: File, files: Any?): List<String> {
            val out = mutableListOf<String>()
            for (entry in files as? List<*> ?: emptyList<Any?>()) {
                if (entry !is Map<*, *> || !Contract.FILE_KEYS.all(entry::containsKey)) continue // already reported
                val name = entry[Contract.FileKey.PATH]
                val rel = name.toString()
                // Not checked by the SDK, which writes these paths itself; a phone reads pushed files.
                if (rel.startsWith("/") || rel.split('/').contains("..")) {
                    out += "file ${Py.repr(name)} points outside the bundle; re-export it"
                    continue
                }
                val path = File(bundle, rel)
                if (!path.exists()) {
                    out += "file ${Py.repr(name)} listed in the manifest is missing"
                    continue
                }
                val size = Checksums.sizeOf(path)
                if (!Py.equal(size, entry[Contract.FileKey.SIZE])) {
                    out += "file ${Py.repr(name)} has $size bytes; the manifest says ${entry[Contract.FileKey.SIZE]} (tampered or truncated)"
                } else if (Checksums.sha256Of(path) != entry[Contract.FileKey.SHA256]) {
                    out += "file ${Py.repr(name)} fails its sha256 checksum (tampered or corrupted)"
                }
            }
            return out
        }
    }
}

/**
 * Every structural problem of a manifest JSON value, empty when valid; files are not read.
 * Mirrors mobile_peft/core/manifest.py `manifest_problems` check for check and message for message
 * (tests/demo_apps/fixtures/manifest_problems.json holds Python's answers for broken manifests):
 * missing keys and sub-keys, the type of every value the phone reads, then (once those hold) the
 * trainable tensors against the schedule, the schedule itself and that every file the manifest
 * names is one it checksums.
 */
fun manifestProblems(manifest: Any?): List<String> = ManifestChecks.problems(manifest)

internal object ManifestChecks {
    private val TRAINABLE_DTYPES = listOf("float32", "float16")

    /**
     * One JSON value's declared type (mobile_peft/core/fields.py `Field`): [kind] is a JSON Schema
     * type name; [minimum] for numbers, [length] / [items] for arrays, [contains] for strings
     * that must hold a substring, [path] for file names inside the bundle, [hex64] for digests.
     */
    private class Field(
        val kind: String,
        val minimum: Double? = null,
        val exclusive: Boolean = false,
        val length: Int? = null,
        val items: Field? = null,
        val contains: String? = null,
        val path: Boolean = false,
        val hex64: Boolean = false,
        val nullable: Boolean = false,
    ) {
        fun check(v: Any?): Boolean {
            if (v == null) return nullable
            return when (kind) {
                "string" -> v is String && (contains == null || contains in v) && (!path || isRelativePath(v)) &&
                    (!hex64 || (v.length == 64 && v.all { it in "0123456789abcdef" }))
                "boolean" -> v is Boolean
                "object" -> v is Map<*, *>
                "array" -> v is List<*> && (length == null || v.size == length) && (items == null || v.all(items::check))
                else -> {
                    val number = when (v) {
                        is Long -> v.toDouble()
                        is Double -> if (kind == "integer" || !v.isFinite()) return false else v
                        else -> return false
                    }
                    minimum == null || (if (exclusive) number > minimum else number >= minimum)
                }
            }
        }

        fun describe(): String {
            var text = NAMES.getValue(kind)
            if (minimum != null) text += " ${if (exclusive) ">" else ">="} ${g(minimum)}"
            if (length != null) {
                text = "a list of $length" + (if (items != null) " (${items.describe()})" else "")
            } else if (items != null) {
                text += " of ${items.describe()}"
            }
            if (contains != null) text += " containing $contains"
            if (path) text = "a relative path inside the bundle"
            if (hex64) text = "64 hex digits"
            return text + if (nullable) " or null" else ""
        }

        private fun g(x: Double): String = if (x == Math.rint(x) && Math.abs(x) < 1e16) x.toLong().toString() else Py.floatRepr(x)

        companion object {
            val NAMES = mapOf(
                "string" to "a string", "integer" to "a whole number", "number" to "a finite number",
                "boolean" to "true or false", "object" to "an object", "array" to "a list",
            )
        }
    }

    private val STRING = Field("string")
    private val BOOLEAN = Field("boolean")
    private val OBJECT = Field("object")
    private val ARRAY = Field("array")
    private val PATH = Field("string", path = true)
    private val SHA256 = Field("string", hex64 = true)
    private fun integer(minimum: Long? = null) = Field("integer", minimum = minimum?.toDouble())
    private fun positive() = Field("number", minimum = 0.0, exclusive = true)

    /** A file name inside the bundle: relative, no `..`, no backslash. */
    fun isRelativePath(v: Any?): Boolean =
        v is String && v.isNotEmpty() && '\\' !in v && !v.startsWith("/") && ".." !in v.split('/')

    private val PATH_METHODS = listOf(
        Contract.MethodKey.PROGRAM, Contract.MethodKey.TRAINABLE_DATA, Contract.MethodKey.TRAINING_MODEL,
        Contract.MethodKey.EVAL_MODEL, Contract.MethodKey.OPTIMIZER_MODEL, Contract.MethodKey.CHECKPOINT,
    )
    private const val PTE_METHOD = "pte_method"

    /** `FIELD_TYPES` (the sections the validator checks), in its order. */
    private val TYPES: Map<String, Map<String, Field>> = run {
        val rgb = Field("array", length = 3, items = Field("number"))
        val sizes = Field("array", items = integer(0))
        mapOf(
            "" to linkedMapOf(
                Contract.Key.SCHEMA to STRING, Contract.Key.SCHEMA_VERSION to integer(), Contract.Key.FORMAT to STRING,
                Contract.Key.SDK_VERSION to STRING, Contract.Key.MODEL to OBJECT, Contract.Key.INPUT_SPEC to OBJECT,
                Contract.Key.METHODS to OBJECT, Contract.Key.TRAINABLE to ARRAY, Contract.Key.RANK_SCHEDULE to OBJECT,
                Contract.Key.PERFORMANCE_MODEL to Field("object", nullable = true), Contract.Key.OPTIMIZER to OBJECT,
                Contract.Key.BACKBONE to OBJECT, Contract.Key.FILES to ARRAY, Contract.Key.MEMORY_BOUND to OBJECT,
            ),
            Contract.Key.MODEL to linkedMapOf(
                Contract.ModelKey.NAME to STRING, Contract.ModelKey.QUANT to STRING, Contract.ModelKey.PARAMETERS to integer(0),
                Contract.ModelKey.NUM_IMAGE_TOKENS to integer(0), Contract.ModelKey.VOCAB_SIZE to integer(1),
            ),
            Contract.Key.INPUT_SPEC to linkedMapOf(
                Contract.InputSpecKey.IMAGE_SIZE to integer(1),
                Contract.InputSpecKey.IMAGE_MEAN to rgb,
                Contract.InputSpecKey.IMAGE_STD to Field("array", length = 3, items = positive()),
                Contract.InputSpecKey.PROMPT_TEMPLATE to Field("string", contains = InputSpec.QUESTION_PLACEHOLDER),
                Contract.InputSpecKey.MAX_TEXT_LEN to integer(3),
                Contract.InputSpecKey.LOWERCASE to BOOLEAN,
                Contract.InputSpecKey.SEQUENCE_LENGTH to integer(1),
                Contract.InputSpecKey.BATCH_SIZE to integer(1),
                Contract.InputSpecKey.TOKEN_IDS to OBJECT,
                Contract.InputSpecKey.TOKENIZER_FILE to PATH,
                Contract.InputSpecKey.PAD_TOKEN to STRING,
                Contract.InputSpecKey.BOS_TOKEN to STRING,
                Contract.InputSpecKey.EOS_TOKEN to STRING,
            ),
            "${Contract.Key.INPUT_SPEC}.${Contract.InputSpecKey.TOKEN_IDS}" to linkedMapOf(
                Contract.TokenIdKey.PAD to integer(0), Contract.TokenIdKey.BOS to integer(0),
                Contract.TokenIdKey.EOS to integer(0), Contract.TokenIdKey.IGNORE_INDEX to integer(),
            ),
            Contract.Key.OPTIMIZER to linkedMapOf(Contract.OptimizerKey.NAME to STRING, Contract.OptimizerKey.LR to positive()),
            Contract.Key.BACKBONE to linkedMapOf(
                Contract.BackboneKey.QUANT to STRING, Contract.BackboneKey.BYTES_BY_DTYPE to OBJECT, Contract.BackboneKey.TOTAL_BYTES to integer(0),
            ),
            Contract.Key.MEMORY_BOUND to LinkedHashMap<String, Field>().apply {
                for (k in Contract.MEMORY_BOUND_KEYS) put(k, integer(0))
                put(Contract.MemoryBoundKey.BATCH_SIZE, integer(1))
                put(Contract.MemoryBoundKey.COUNTED_BY, STRING)
            },
            Contract.Key.TRAINABLE to LinkedHashMap<String, Field>().apply {
                for (k in Contract.TRAINABLE_KEYS) put(k, STRING)
                put(Contract.TrainableKey.SHAPE, sizes)
            },
            Contract.Key.FILES to linkedMapOf(Contract.FileKey.PATH to PATH, Contract.FileKey.SHA256 to SHA256, Contract.FileKey.SIZE to integer(0)),
            Contract.Key.METHODS to LinkedHashMap<String, Field>().apply {
                for (k in PATH_METHODS) put(k, PATH)
                put(Contract.MethodKey.TRAIN, OBJECT)
                put(Contract.MethodKey.EVAL, OBJECT)
                put(Contract.MethodKey.TRAIN_INPUTS, ARRAY)
                put(Contract.MethodKey.OUTPUTS, ARRAY)
                put(Contract.MethodKey.BACKBONE, OBJECT)
                put(Contract.MethodKey.HEAD, OBJECT)
            },
            PTE_METHOD to linkedMapOf(
                Contract.MethodKey.METHOD to STRING, Contract.MethodKey.INPUTS to ARRAY, Contract.MethodKey.OUTPUTS to ARRAY,
                Contract.MethodKey.GRADIENTS_INDEX_METHOD to STRING, Contract.MethodKey.PARAMETERS_INDEX_METHOD to STRING,
                Contract.MethodKey.FQN_METHOD to STRING,
            ),
        )
    }

    /** `_missing`: missing keys of [section] and values of the wrong type (`TYPES[types]`, default [where]). */
    private fun missing(section: Any?, keys: List<String>, where: String, types: String = where): List<String> {
        if (section !is Map<*, *>) return listOf("$where is a ${Py.typeName(section)}, expected an object")
        val out = keys.filterNot(section::containsKey).map { "missing key $where.$it" }.toMutableList()
        for ((key, field) in TYPES[types].orEmpty()) {
            if (section.containsKey(key) && !field.check(section[key])) out += "$where.$key is ${Py.repr(Py.head(section[key], 60))}; expected ${field.describe()}"
        }
        return out
    }

    fun problems(manifest: Any?): List<String> {
        if (manifest !is Map<*, *>) return listOf("the manifest is a ${Py.typeName(manifest)}, expected an object")
        val out = Contract.REQUIRED_KEYS.filterNot(manifest::containsKey).map { "missing key ${Py.repr(it)}" }.toMutableList()
        if (manifest.containsKey(Contract.Key.SCHEMA) && manifest[Contract.Key.SCHEMA] != Contract.SCHEMA_NAME) {
            out += "schema is ${Py.repr(manifest[Contract.Key.SCHEMA])}; expected ${Py.repr(Contract.SCHEMA_NAME)}"
        }
        val version = manifest[Contract.Key.SCHEMA_VERSION]
        if (manifest.containsKey(Contract.Key.SCHEMA_VERSION) && Contract.SUPPORTED_SCHEMA_VERSIONS.none { Py.equal(version, it.toLong()) }) {
            out += "schema_version is ${Py.repr(version)}; this mobile-peft reads ${Py.repr(Contract.SUPPORTED_SCHEMA_VERSIONS)} " +
                "(upgrade mobile-peft for a newer bundle, or re-export an older one)"
        }
        if (manifest.containsKey(Contract.Key.FORMAT) && Contract.FORMATS.none { it == manifest[Contract.Key.FORMAT] }) {
            out += "format ${Py.repr(manifest[Contract.Key.FORMAT])} is unknown; expected one of ${Py.repr(Contract.FORMATS)}"
        }
        out += missing(manifest, emptyList(), "")
        for ((key, keys) in listOf(
            Contract.Key.MODEL to Contract.MODEL_KEYS,
            Contract.Key.INPUT_SPEC to Contract.INPUT_SPEC_KEYS,
            Contract.Key.OPTIMIZER to Contract.OPTIMIZER_KEYS,
            Contract.Key.BACKBONE to Contract.BACKBONE_KEYS,
        )) {
            if (manifest[key] is Map<*, *>) out += missing(manifest[key], keys, key)
        }
        val spec = manifest[Contract.Key.INPUT_SPEC]
        if (spec is Map<*, *> && spec[Contract.InputSpecKey.TOKEN_IDS] is Map<*, *>) {
            out += missing(spec[Contract.InputSpecKey.TOKEN_IDS], Contract.TOKEN_ID_KEYS, "${Contract.Key.INPUT_SPEC}.${Contract.InputSpecKey.TOKEN_IDS}")
        }
        out += listOfObjects(manifest, Contract.Key.TRAINABLE, Contract.TRAINABLE_KEYS)
        out += listOfObjects(manifest, Contract.Key.FILES, Contract.FILE_KEYS)
        out += methodsProblems(manifest)
        out += memoryBoundProblems(manifest)
        if (out.isNotEmpty()) return out // the semantic checks below read these sections as typed
        out += scheduleProblems(manifest)
        if (out.isNotEmpty()) return out // trainable shapes are checked against a well-formed schedule
        out += trainableProblems(manifest)
        out += referenceProblems(manifest)
        return out
    }

    private fun listOfObjects(manifest: Map<*, *>, key: String, keys: List<String>): List<String> {
        val entries = manifest[key] as? List<*> ?: return emptyList() // reported with the top-level types
        return entries.flatMapIndexed { i, e -> missing(e, keys, "$key[$i]", types = key) }
    }

    private fun methodsProblems(manifest: Map<*, *>): List<String> {
        val format = manifest[Contract.Key.FORMAT] as? String ?: return emptyList()
        val methods = manifest[Contract.Key.METHODS] as? Map<*, *> ?: return emptyList()
        val required = Contract.METHOD_KEYS[format] ?: return emptyList()
        val out = missing(methods, required, Contract.Key.METHODS).toMutableList()
        if (format == Contract.FORMAT_PTE) {
            for ((key, keys) in listOf(Contract.MethodKey.TRAIN to Contract.PTE_TRAIN_METHOD_KEYS, Contract.MethodKey.EVAL to Contract.PTE_EVAL_METHOD_KEYS)) {
                if (methods[key] is Map<*, *>) out += missing(methods[key], keys, "${Contract.Key.METHODS}.$key", types = PTE_METHOD)
            }
        }
        return out
    }

    /** The optional `memory_bound` section: its keys and types, and a total that is the sum of its terms. */
    private fun memoryBoundProblems(manifest: Map<*, *>): List<String> {
        val key = Contract.Key.MEMORY_BOUND
        val section = manifest[key] as? Map<*, *> ?: return emptyList() // absent, or reported with the top-level types
        val out = missing(section, Contract.MEMORY_BOUND_KEYS, key)
        if (out.isNotEmpty()) return out
        val terms = listOf(
            Contract.MemoryBoundKey.BACKBONE_BYTES, Contract.MemoryBoundKey.TRAINABLE_BYTES, Contract.MemoryBoundKey.GRADIENT_BYTES,
            Contract.MemoryBoundKey.OPTIMIZER_STATE_BYTES, Contract.MemoryBoundKey.ACTIVATION_BYTES,
        )
        val total = terms.sumOf { section[it] as Long }
        if (!Py.equal(section[Contract.MemoryBoundKey.TOTAL_BYTES], total)) {
            return listOf("$key.${Contract.MemoryBoundKey.TOTAL_BYTES} is ${Py.str(section[Contract.MemoryBoundKey.TOTAL_BYTES])}; expected the sum of its terms, $total")
        }
        return emptyList()
    }

    private fun trainableProblems(manifest: Map<*, *>): List<String> {
        val entries = manifest[Contract.Key.TRAINABLE] as List<*>
        val out = mutableListOf<String>()
        entries.forEachIndexed { i, e ->
            if (e is Map<*, *> && e.containsKey(Contract.TrainableKey.ROLE) && e[Contract.TrainableKey.ROLE] !in Contract.ROLES) {
                out += "${Contract.Key.TRAINABLE}[$i].${Contract.TrainableKey.ROLE} is ${Py.repr(e[Contract.TrainableKey.ROLE])}; expected one of ${Py.repr(Contract.ROLES)}"
            }
        }
        val pairs = LinkedHashMap<Pair<Any?, Any?>, MutableList<Any?>>()
        for (e in entries) if (e is Map<*, *>) pairs.getOrPut(e[Contract.TrainableKey.MODULE] to e[Contract.TrainableKey.SLOT]) { mutableListOf() } += e[Contract.TrainableKey.ROLE]
        val modules = (manifest[Contract.Key.RANK_SCHEDULE] as? Map<*, *>)?.get(Contract.ScheduleKey.MODULES) as? Map<*, *>
        entries.forEachIndexed { i, e ->
            if (e !is Map<*, *> || modules == null) return@forEachIndexed
            val info = ((modules[e[Contract.TrainableKey.MODULE]] as? Map<*, *>)?.get(Contract.ScheduleKey.SLOTS) as? Map<*, *>)?.get(e[Contract.TrainableKey.SLOT]) as? Map<*, *>
            val shape = e[Contract.TrainableKey.SHAPE]
            val role = e[Contract.TrainableKey.ROLE]
            val rMax = info?.get(Contract.SlotKey.R_MAX)
            when {
                info == null -> out += "${Contract.Key.TRAINABLE}[$i] (${Py.str(e[Contract.TrainableKey.NAME])}) belongs to no slot of the rank schedule"
                !(shape is List<*> && shape.size == 2 && shape.all { it is Long && it >= 0 }) ->
                    out += "${Contract.Key.TRAINABLE}[$i].${Contract.TrainableKey.SHAPE} is ${Py.repr(shape)}; expected two sizes"
                role in Contract.ROLES && !Py.equal(shape[if (role == Contract.ROLE_DOWN) 0 else 1], rMax) ->
                    out += "${Contract.Key.TRAINABLE}[$i] (${Py.str(e[Contract.TrainableKey.NAME])}, ${Py.str(role)}) has shape ${Py.str(shape)}; " +
                        "its rank dimension must be the slot's r_max ${Py.str(rMax)}"
            }
            if (e[Contract.TrainableKey.DTYPE] !in TRAINABLE_DTYPES) {
                out += "${Contract.Key.TRAINABLE}[$i].${Contract.TrainableKey.DTYPE} is ${Py.repr(e[Contract.TrainableKey.DTYPE])}; expected one of ${Py.repr(TRAINABLE_DTYPES)}"
            }
        }
        for ((key, roles) in pairs) {
            if (null !in roles && roles.map { Py.str(it) }.sortedWith(Py.STRING_ORDER) != Contract.ROLES.sortedWith(Py.STRING_ORDER)) {
                out += "${Contract.Key.TRAINABLE}: ${Py.str(key.first)}.${Py.str(key.second)} has roles ${Py.repr(roles)}; " +
                    "expected one ${Py.repr(Contract.ROLE_DOWN)} and one ${Py.repr(Contract.ROLE_UP)}"
            }
        }
        return out
    }

    private fun scheduleProblems(manifest: Map<*, *>): List<String> {
        val key = Contract.Key.RANK_SCHEDULE
        val section = manifest[key] as Map<*, *>
        val out = missing(section, Contract.BUNDLE_RANK_SCHEDULE_KEYS, key).toMutableList()
        val modules = section[Contract.ScheduleKey.MODULES] as? Map<*, *>
        for ((module, entry) in modules.orEmpty()) {
            val slots = (entry as? Map<*, *>)?.get(Contract.ScheduleKey.SLOTS) as? Map<*, *>
            if (slots == null) {
                out += "$key.${Contract.ScheduleKey.MODULES}[${Py.repr(module)}] has no slots object"
                continue
            }
            for ((slot, info) in slots) {
                out += missing(info, Contract.SLOT_KEYS, "$key.${Contract.ScheduleKey.MODULES}[${Py.repr(module)}].${Contract.ScheduleKey.SLOTS}[${Py.repr(slot)}]")
            }
        }
        if (out.isNotEmpty()) return out
        return try {
            RankSchedule.read(section, where = key)
            emptyList()
        } catch (e: ConfigError) {
            listOf(e.message.orEmpty())
        }
    }

    /** Every file the manifest names must be one it checksums (so nothing unverified is opened). */
    private fun referenceProblems(manifest: Map<*, *>): List<String> {
        val listed = (manifest[Contract.Key.FILES] as List<*>).map { (it as Map<*, *>)[Contract.FileKey.PATH] }.toSet()
        val methods = manifest[Contract.Key.METHODS] as Map<*, *>
        val named = listOf((manifest[Contract.Key.INPUT_SPEC] as Map<*, *>)[Contract.InputSpecKey.TOKENIZER_FILE]) +
            PATH_METHODS.filter(methods::containsKey).map { methods[it] }
        return named.filter { it !in listed }.map { "${Py.repr(it)} is used by the manifest but not listed (with its sha256) in files" }
    }
}
