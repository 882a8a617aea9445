--- help entries: the methods of Tensor (lua/binding/tensor.c, lua/towerkit/tensor.lua).
local D = require("towerkit.doc").define

local function M(name, sig, summary, merlin, example)
  D("Tensor:" .. name) { "t:" .. sig, summary, merlin = merlin, example = example }
end

M("shape", "shape() -> {d1, d2, ...}", "The dimensions.", "tf.Tensor.shape", "tk.ones{2, 3}:shape()")
M("size", "size([d]) -> {d1, ...} or n", "The shape, or the size of dimension d (1-based; negative from the end).",
  "torch.Tensor.size", "tk.ones{2, 3}:size(2)")
M("dim", "dim() -> n", "The number of dimensions.", "tf.rank", "tk.ones{2, 3}:dim()")
M("numel", "numel() -> n", "The number of elements.", "tf.size", "tk.ones{2, 3}:numel()")
M("dtype", "dtype() -> \"float32\" | \"int64\"", "The element type.", "tf.Tensor.dtype", "tk.ones{2}:dtype()")
M("totable", "totable() -> nested Lua table", "The values as Lua numbers, nested like the shape.",
  "tf.Tensor.numpy().tolist()", "tk.ones{2, 2}:totable()")
M("get", "get(i, j, ...) -> number", "The element at 1-based indices.", "t[i, j]", "tk.tensor{{1, 2}}:get(1, 2)")
M("set", "set(value, i, j, ...) -> t", "Sets an element of a heap tensor (1-based indices).", "tf.Variable.assign (one element)",
  "local t = tk.zeros{2}\nt:set(5, 1)")
M("item", "item() -> number", "The value of a one-element tensor.", "tf.Tensor.numpy().item()", "tk.ones{1}:item()")
M("clone", "clone() -> Tensor", "A heap copy that outlives the context (tk.reset) it was computed in.",
  "tf.identity", "tk.ones{2}:exp():clone()")
M("copy_from", "copy_from(src) -> t", "Copies src's values into this heap tensor (same shape).", "tf.Variable.assign",
  "tk.zeros{2}:copy_from(tk.ones{2})")
M("fill", "fill(value) -> t", "Sets every element of a heap tensor to value.", "tf.Variable.assign(tf.fill(...))",
  "tk.zeros{3}:fill(2)")
M("requires_grad", "requires_grad([on]) -> boolean or t",
  "Reads, or sets on a float32 leaf, whether gradients are kept for it.", "tf.Variable(trainable = True)",
  "local w = tk.randn{3}:requires_grad(true)")
M("is_leaf", "is_leaf() -> boolean", "True for tensors made outside a context (not computed by ops).", "torch.Tensor.is_leaf",
  "tk.ones{2}:is_leaf()")
M("backward", "backward()", "Runs the tape of the tensor's context from it (a scalar loss): fills the leaves'\n" ..
  "gradients. Once per tape: a second call before tk.reset() is an error (it would add the\ngradients again).",
  "tf.GradientTape.gradient", "local w = tk.ones{3}:requires_grad(true)\nw:square():sum():backward()\nw:grad()")
M("grad", "grad([ctx]) -> Tensor or nil", "The gradient of a leaf in ctx (default: the current context).",
  "tape.gradient(loss, w)", "w:grad()")
M("add", "add(b) -> Tensor", "Element-wise a + b (b a tensor, broadcast over rows, or a number); also t + b.", "tf.add",
  "tk.ones{2} + 1")
M("sub", "sub(b) -> Tensor", "Element-wise a - b; also t - b.", "tf.subtract", "tk.ones{2}:sub(tk.ones{2})")
M("mul", "mul(b) -> Tensor", "Element-wise a * b; also t * b.", "tf.multiply", "tk.ones{2} * 3")
M("div", "div(b) -> Tensor", "Element-wise a / b; also t / b.", "tf.divide", "tk.ones{2} / 4")
M("exp", "exp() -> Tensor", "Element-wise e^x.", "tf.exp", "tk.zeros{2}:exp()")
M("log", "log() -> Tensor", "Element-wise natural logarithm.", "tf.math.log", "tk.ones{2}:log()")
M("sqrt", "sqrt() -> Tensor", "Element-wise square root.", "tf.sqrt", "tk.full({2}, 4):sqrt()")
M("square", "square() -> Tensor", "Element-wise x^2.", "tf.square", "tk.full({2}, 3):square()")
M("pow2", "pow2() -> Tensor", "Element-wise x^2 (the same as square).", "tf.square", "tk.full({2}, 3):pow2()")
M("l2norm", "l2norm() -> Tensor", "Each row divided by its L2 norm.", "tf.math.l2_normalize(axis = -1)",
  "tk.tensor{{3, 4}}:l2norm()")
M("t", "t() -> Tensor", "The transpose of a 2-d tensor.", "tf.transpose", "tk.ones{2, 3}:t():shape()")
M("transpose", "transpose() -> Tensor", "The transpose of a 2-d tensor (the same as t()).", "tf.transpose",
  "tk.ones{2, 3}:transpose():shape()")
M("log_softmax", "log_softmax() -> Tensor", "Row-wise log-softmax.", "tf.nn.log_softmax", "tk.ones{2, 3}:log_softmax()")
M("scale", "scale(s) -> Tensor", "Every element times the number s.", "tf.scalar_mul(s, t)", "tk.ones{2}:scale(0.5)")
M("activate", "activate(name) -> Tensor", "Applies a named activation (relu, sigmoid, tanh, gelu, selu, elu, softplus,\nlinear).",
  "tf.keras.activations.get(name)", "tk.tensor{-1, 1}:activate(\"relu\")")
for _, a in ipairs { "relu", "sigmoid", "tanh", "gelu", "selu", "elu", "softplus" } do
  M(a, a .. "() -> Tensor", ("t:activate(%q): the %s activation, element-wise."):format(a, a), "tf.nn." .. a,
    ("tk.tensor{-1, 0, 1}:%s()"):format(a))
end
M("matmul", "matmul(b [, transpose_a = false [, transpose_b = false]]) -> Tensor", "Matrix product (tk.matmul).",
  "tf.matmul", "tk.ones{2, 3}:matmul(tk.ones{3, 2})")
M("sum", "sum([d [, keepdim = false]]) -> Tensor", "The sum of all elements, or along dimension d (1-based).",
  "tf.reduce_sum", "tk.ones{2, 3}:sum(2)")
M("mean", "mean([d [, keepdim = false]]) -> Tensor", "The mean of all elements, or along dimension d (1-based).",
  "tf.reduce_mean", "tk.ones{2, 3}:mean()")
M("reshape", "reshape(shape) or reshape(d1, d2, ...) -> Tensor", "The same values in another shape (-1: inferred).",
  "tf.reshape", "tk.ones{2, 3}:reshape{3, 2}")
M("view", "view(shape) or view(d1, d2, ...) -> Tensor", "The same as reshape (PyTorch's name).", "tf.reshape",
  "tk.ones{2, 3}:view(6)")
M("dropout", "dropout(rate) -> Tensor", "Inverted dropout in training (the identity otherwise).", "tf.nn.dropout",
  "tk.ones{4}:dropout(0.5)")
