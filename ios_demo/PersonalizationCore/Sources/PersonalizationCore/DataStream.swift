import Foundation

/// Where a stream is: `index` examples into epoch `epoch`'s permutation of seed `seed`'s order.
public struct StreamPosition: Equatable {
    public var epoch = 0
    public var index = 0
    public var seed = 0

    public static let epochKey = "epoch"
    public static let indexKey = "index"
    public static let seedKey = "seed"

    public init(epoch: Int = 0, index: Int = 0, seed: Int = 0) {
        self.epoch = epoch
        self.index = index
        self.seed = seed
    }

    public func toJson() -> JSON { [StreamPosition.epochKey: .int(epoch), StreamPosition.indexKey: .int(index), StreamPosition.seedKey: .int(seed)] }

    public static func fromJson(_ o: JSONObject) throws -> StreamPosition {
        StreamPosition(epoch: try Py.toInt(o[epochKey]), index: try Py.toInt(o[indexKey]), seed: try Py.toInt(o[seedKey]))
    }
}

/// The training order of runtime/data.py `DataStream`: fixed-size batches in a per-epoch shuffled
/// order that depends only on `(seed, epoch)` (`default_rng([seed, epoch]).permutation`, drawn as
/// numpy draws it), so restoring a `StreamPosition` reproduces the remaining batches exactly and
/// the phone visits examples in the reference runtime's order. A batch that crosses an epoch
/// boundary takes the rest of one epoch and the start of the next.
public final class DataStream {
    public let size: Int
    public let batchSize: Int
    public var position: StreamPosition
    private var cached: (Int, Int)?
    private var cachedOrder: [Int] = []

    public init(size: Int, batchSize: Int, position: StreamPosition = StreamPosition()) throws {
        if size <= 0 { throw DataError("the training data has no examples.") }
        if batchSize <= 0 { throw ConfigError("batch size \(batchSize); expected a positive number of examples.") }
        self.size = size
        self.batchSize = batchSize
        self.position = position
    }

    public func order(_ seed: Int, _ epoch: Int) -> [Int] {
        if cached == nil || cached! != (seed, epoch) {
            cachedOrder = NumpyRandom.of(seed, epoch).permutation(size)
            cached = (seed, epoch)
        }
        return cachedOrder
    }

    /// The example indices of the next batch; advances `position`.
    public func next() -> [Int] {
        let seed = position.seed
        var epoch = position.epoch
        var index = position.index
        var chosen: [Int] = []
        for _ in 0..<batchSize {
            if index == size {
                epoch += 1
                index = 0
            }
            chosen.append(order(seed, epoch)[index])
            index += 1
        }
        position = StreamPosition(epoch: epoch, index: index, seed: seed)
        return chosen
    }
}
