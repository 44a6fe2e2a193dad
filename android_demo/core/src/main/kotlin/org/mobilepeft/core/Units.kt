package org.mobilepeft.core

/**
 * Allocation units (mobile_peft/core/units.py): one rank slot of one adapted module, keyed
 * `"<module path>::<slot>"`, and where a module sits in the VLM (tower, layer, block).
 */
object Units {
    const val SEPARATOR = "::"
    private val LAYER = Regex("""\.(?:layers|layer|h|blocks)\.(\d+)\.""")
    private val MLP_NAMES = listOf("mlp", "fc1", "fc2", "gate_proj", "up_proj", "down_proj")

    data class Place(val tower: String, val layer: Int, val kind: String, val block: String)

    fun key(module: String, slot: String): String = "$module$SEPARATOR$slot"

    /** `(module, slot)` of a unit key (split at the last separator, as `str.rpartition`). */
    fun split(key: String): Pair<String, String> {
        val at = key.lastIndexOf(SEPARATOR)
        return if (at < 0) "" to key else key.substring(0, at) to key.substring(at + SEPARATOR.length)
    }

    /** `module_place`: parse a path such as `language_model.model.layers.3.mlp.up_proj`. */
    fun place(path: String): Place {
        val tower = when {
            path.startsWith("vision_tower") || ".vision" in path -> "vision"
            "projector" in path -> "projector"
            path.startsWith("language_model") || "language" in path -> "language"
            else -> "other"
        }
        val match = LAYER.find(path)
        val layer = match?.groupValues?.get(1)?.toInt() ?: 0
        val kind = if (match != null) path.substring(match.range.last + 1) else path.substringAfterLast('.')
        val block = if (tower == "projector") "proj" else if (MLP_NAMES.any { it in kind }) "mlp" else "attn"
        return Place(tower, layer, kind, block)
    }

    /** `units_to_ranks`: `{"path::slot": r}` -> `{path: {slot: r}}`. */
    fun toRanks(units: Map<String, Int>): Ranks {
        val out = LinkedHashMap<String, MutableMap<String, Int>>()
        for ((key, r) in units) {
            val (m, s) = split(key)
            out.getOrPut(m) { LinkedHashMap() }[s] = r
        }
        return out
    }

    /** `ranks_to_units`: `{path: {slot: r}}` -> `{"path::slot": r}` for the given units. */
    fun fromRanks(ranks: Ranks, units: Collection<String>): LinkedHashMap<String, Int> {
        val out = LinkedHashMap<String, Int>()
        for (u in units) {
            val (m, s) = split(u)
            out[u] = ranks[m]?.get(s) ?: throw ConfigError("ranks have no entry for unit $u")
        }
        return out
    }
}
